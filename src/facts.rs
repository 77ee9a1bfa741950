//! What gracegate knows about each target group, and how it is shared. Pure.
//!
//! * [`Facts`]: what `DescribeTargetGroups` and `DescribeTargetGroupAttributes` say (health
//!   check timings, protocol → load balancer kind, deregistration delay `D`, slow start).
//! * [`Drain`]s: how long each departing target stayed listed after its pod's deletion (the
//!   drain) and how long the controller took to start deregistering it (the lag). Only these
//!   measure what no API says: a load balancer keeps routing new requests to a `draining`
//!   target for a while, and a busy controller deregisters late.
//! * [`Records`]: one [`Record`] per target group, kept by the leader in the ConfigMap
//!   [`CONFIGMAP_NAME`] (one JSON document per target group) and read by every webhook
//!   replica, `plan` and `audit`.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::elb::{Facts, LoadBalancerKind, TargetGroup, name_from_arn};

/// The ConfigMap, in gracegate's own namespace, that holds every [`Record`].
pub const CONFIGMAP_NAME: &str = "gracegate-target-groups";
/// Drains kept per target group: the newest ones.
pub const MAX_DRAINS: usize = 50;
/// Drains needed before the measured p99 sizes `S`: fewer say little about the tail.
pub const MIN_DRAINS: usize = 5;
/// Drains a network load balancer's target group needs before they may bring `S` *below* the
/// NLB default (`--nlb-prestop-seconds`); from [`MIN_DRAINS`] on they can already raise it.
/// The p99 of five drains is their maximum, and whatever the distribution, the slowest of the
/// next five departures outlasts the slowest of the first five half the time (5 in 10, the
/// draws being exchangeable): the second rollout behind an NLB would stop a pod while still
/// routed. After twenty it is one time in five, and then only by less than the margin at the
/// spreads measured (the rollout lab, tests/webhook/rollout_lab.rs).
pub const NLB_MIN_DRAINS: usize = 20;
/// Target groups kept in the ConfigMap: at ~5 KB each (50 drains) this stays under half the
/// API server's 1 MiB object limit. The least recently updated go first.
pub const MAX_RECORDS: usize = 100;

/// One measured departure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// When the target was seen gone.
    pub at: Timestamp,
    /// Pod deleted → target no longer listed (or `unused`).
    pub drain_seconds: f64,
    /// Pod deleted → first `draining` answer; `None` when it was never seen draining (the
    /// target left between two looks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

/// Order statistics over a sample, by nearest rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for an empty sample; NaN and negative values are not measurements and are
    /// left out.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values
            .into_iter()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p of the sample at or below it.
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            count: v.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: v[v.len() - 1],
        })
    }
}

/// Everything known about one target group, with the time of each figure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Record {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    /// When the facts were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts_at: Option<Timestamp>,
    /// The newest [`MAX_DRAINS`] drains, oldest first.
    pub drains: VecDeque<Drain>,
    /// Statistics of `drains` (drain seconds), for readers; recomputed on every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<Stats>,
    /// Statistics of the controller lag of `drains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<Stats>,
    /// When anything in the record last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

impl Record {
    /// Add a measured drain, keeping the newest [`MAX_DRAINS`].
    pub fn add_drain(&mut self, drain: Drain) {
        self.updated_at = Some(drain.at);
        self.drains.push_back(drain);
        while self.drains.len() > MAX_DRAINS {
            self.drains.pop_front();
        }
        self.restat();
    }

    /// Replace the facts; returns whether anything but the time changed.
    pub fn set_facts(&mut self, facts: Facts, at: Timestamp) -> bool {
        let changed = self.facts.as_ref() != Some(&facts);
        self.facts = Some(facts);
        self.facts_at = Some(at);
        self.updated_at = Some(at);
        changed
    }

    fn restat(&mut self) {
        self.drain = Stats::of(self.drains.iter().map(|d| d.drain_seconds));
        self.lag = Stats::of(self.drains.iter().filter_map(|d| d.lag_seconds));
    }

    /// The measured p99 drain, once at least [`MIN_DRAINS`] are measured.
    pub fn measured_p99(&self) -> Option<f64> {
        self.drain
            .as_ref()
            .filter(|s| s.count >= MIN_DRAINS)
            .map(|s| s.p99)
    }

    pub fn load_balancer(&self) -> Option<LoadBalancerKind> {
        self.facts.as_ref()?.load_balancer
    }

    pub fn deregistration_delay(&self) -> Option<u32> {
        self.facts.as_ref()?.deregistration_delay_seconds
    }

    /// Whether this record is about `group` (by ARN, or by name for bindings that only
    /// name their target group).
    pub fn is_for(&self, group: &TargetGroup) -> bool {
        match group {
            TargetGroup::Arn(arn) => self.target_group_arn.as_deref() == Some(arn),
            TargetGroup::Name(name) => {
                self.target_group_name.as_deref() == Some(name)
                    || self
                        .target_group_arn
                        .as_deref()
                        .and_then(name_from_arn)
                        .is_some_and(|n| n == name)
            }
        }
    }
}

/// Every target group's record, by ConfigMap key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    pub by_key: BTreeMap<String, Record>,
}

impl Records {
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn get(&self, group: &TargetGroup) -> Option<&Record> {
        if let Some(r) = self.by_key.get(&key(group)) {
            return Some(r);
        }
        self.by_key.values().find(|r| r.is_for(group))
    }

    /// The record of `group`, made if missing.
    pub fn entry(&mut self, group: &TargetGroup, arn: Option<&str>) -> &mut Record {
        let k = match arn {
            Some(arn) => key(&TargetGroup::Arn(arn.to_string())),
            None => key(group),
        };
        let record = self.by_key.entry(k).or_default();
        if let Some(arn) = arn {
            record
                .target_group_arn
                .get_or_insert_with(|| arn.to_string());
        }
        match group {
            TargetGroup::Arn(arn) => {
                record.target_group_arn.get_or_insert_with(|| arn.clone());
            }
            TargetGroup::Name(name) => {
                record.target_group_name.get_or_insert_with(|| name.clone());
            }
        }
        record
    }

    /// Read the ConfigMap's `data`. A document that does not parse is skipped and named in
    /// the returned errors: one bad entry must not hide the others.
    pub fn from_data(data: &BTreeMap<String, String>) -> (Records, Vec<String>) {
        let mut records = Records::default();
        let mut errors = Vec::new();
        for (k, v) in data {
            match serde_json::from_str::<Record>(v) {
                Ok(mut r) => {
                    // Statistics are derived: recompute rather than trust them.
                    while r.drains.len() > MAX_DRAINS {
                        r.drains.pop_front();
                    }
                    r.restat();
                    records.by_key.insert(k.clone(), r);
                }
                Err(e) => errors.push(format!("{CONFIGMAP_NAME} key {k}: {e}")),
            }
        }
        (records, errors)
    }

    /// The ConfigMap's `data`: one JSON document per target group, at most [`MAX_RECORDS`]
    /// (the most recently updated).
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut newest: Vec<(&String, &Record)> = self.by_key.iter().collect();
        newest.sort_by_key(|(_, r)| std::cmp::Reverse(r.updated_at));
        newest
            .into_iter()
            .take(MAX_RECORDS)
            .filter_map(|(k, r)| Some((k.clone(), serde_json::to_string(r).ok()?)))
            .collect()
    }
}

/// The ConfigMap key of a target group: keys allow only `[-._a-zA-Z0-9]`, so the ARN's
/// `NAME/ID` becomes `NAME.ID`; other characters become `_`.
pub fn key(group: &TargetGroup) -> String {
    // Looked up once per review on the webhook path: one pass and one allocation (the
    // `replace` and a char-by-char `collect` into a growing string cost ~3,900
    // instructions a review). The keys are stored in the ConfigMap, so the text must not
    // change: the tests hold this against the old two-pass version.
    let (raw, slash) = match group {
        // The first `:targetgroup/`, found at a colon (the substring search's set-up alone
        // cost ~800 instructions a review; an ARN is ~100 bytes). `:` is ASCII: `i + 1` is a
        // char boundary.
        TargetGroup::Arn(arn) => match (0..arn.len())
            .filter(|&i| arn.as_bytes()[i] == b':')
            .find_map(|i| arn[i + 1..].strip_prefix("targetgroup/"))
        {
            Some(rest) => (rest, '.'),
            None => (arn.as_str(), '_'),
        },
        TargetGroup::Name(name) => (name.as_str(), '_'),
    };
    let keyed = |c: char| match c {
        '/' => slash,
        c if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') => c,
        _ => '_',
    };
    // Every char written is ASCII, one byte: at most MAX_KEY_LENGTH chars.
    let mut k = if raw.is_ascii() {
        // A byte is a char: mapped in one tight loop into a buffer of the exact size.
        let bytes = raw.as_bytes()[..raw.len().min(MAX_KEY_LENGTH)].iter();
        let mapped: Vec<u8> = bytes.map(|&b| keyed(char::from(b)) as u8).collect();
        String::from_utf8(mapped).unwrap_or_default()
    } else {
        raw.chars().take(MAX_KEY_LENGTH).map(keyed).collect()
    };
    if k.is_empty() || k == "." || k == ".." {
        k.insert(0, '_');
    }
    k
}

/// A ConfigMap key's limit (keys are at most 253 characters).
const MAX_KEY_LENGTH: usize = 253;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elb::HealthCheck;
    use rstest::rstest;

    const ARN: &str = "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/k8s-game2048-service2-6f5e3c2a1b/0123456789abcdef";

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[rstest]
    #[case::one(&[7.0], (7.0, 7.0, 7.0, 7.0))]
    #[case::ten(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], (5.0, 9.0, 10.0, 10.0))]
    #[case::unsorted(&[30.0, 10.0, 20.0], (20.0, 30.0, 30.0, 30.0))]
    #[case::nan_and_negative_dropped(&[f64::NAN, -1.0, 4.0, 2.0], (2.0, 4.0, 4.0, 4.0))]
    fn nearest_rank_stats(#[case] values: &[f64], #[case] expected: (f64, f64, f64, f64)) {
        let s = Stats::of(values.iter().copied()).unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), expected);
    }

    #[test]
    fn p99_of_a_hundred_is_the_99th() {
        let s = Stats::of((1..=100).map(f64::from)).unwrap();
        assert_eq!(
            (s.count, s.p50, s.p90, s.p99, s.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert!(Stats::of([]).is_none());
        assert!(Stats::of([f64::INFINITY]).is_none());
    }

    #[test]
    fn keeps_the_newest_fifty_and_needs_five() {
        let mut r = Record::default();
        for n in 0..4 {
            r.add_drain(Drain {
                at: at(n),
                drain_seconds: 100.0,
                lag_seconds: Some(1.0),
            });
        }
        assert_eq!(r.measured_p99(), None, "4 drains are not enough");
        r.add_drain(Drain {
            at: at(4),
            drain_seconds: 120.0,
            lag_seconds: None,
        });
        assert_eq!(r.measured_p99(), Some(120.0));
        assert_eq!(
            r.lag.as_ref().unwrap().count,
            4,
            "a missing lag is not a zero"
        );
        for n in 5..80 {
            r.add_drain(Drain {
                at: at(n),
                drain_seconds: 30.0,
                lag_seconds: Some(2.0),
            });
        }
        assert_eq!(r.drains.len(), MAX_DRAINS);
        assert_eq!(
            r.drains.front().unwrap().at,
            at(30),
            "the oldest went first"
        );
        assert_eq!(r.measured_p99(), Some(30.0), "the 120 s drain aged out");
        assert_eq!(r.updated_at, Some(at(79)));
    }

    #[test]
    fn configmap_round_trip_and_a_bad_entry() {
        let mut records = Records::default();
        let group = TargetGroup::Arn(ARN.into());
        let r = records.entry(&group, None);
        r.set_facts(
            Facts {
                protocol: Some("TCP".into()),
                load_balancer: Some(LoadBalancerKind::Network),
                deregistration_delay_seconds: Some(300),
                health_check: HealthCheck {
                    interval_seconds: Some(10),
                    ..HealthCheck::default()
                },
                ..Facts::default()
            },
            at(0),
        );
        r.add_drain(Drain {
            at: at(100),
            drain_seconds: 125.5,
            lag_seconds: Some(3.0),
        });
        let mut data = records.to_data();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            vec!["k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef"]
        );
        let doc: serde_json::Value = serde_json::from_str(data.values().next().unwrap()).unwrap();
        assert_eq!(doc["targetGroupArn"], ARN);
        assert_eq!(doc["facts"]["loadBalancer"], "network");
        assert_eq!(doc["facts"]["deregistrationDelaySeconds"], 300);
        assert_eq!(doc["factsAt"], "2027-01-15T08:00:00Z");
        assert_eq!(doc["drains"][0]["drainSeconds"], 125.5);
        assert_eq!(doc["drain"]["p99"], 125.5);

        data.insert("broken".into(), "{not json".into());
        let (back, errors) = Records::from_data(&data);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("broken"), "{errors:?}");
        assert_eq!(back.get(&group), records.get(&group));
        assert_eq!(
            back.get(&TargetGroup::Name(
                "k8s-game2048-service2-6f5e3c2a1b".into()
            ))
            .and_then(Record::deregistration_delay),
            Some(300),
            "a binding that names its target group finds the record too"
        );
    }

    #[test]
    fn statistics_are_recomputed_on_read() {
        let doc = r#"{"drains":[{"at":"2027-01-15T08:00:00Z","drainSeconds":10.0}],
                      "drain":{"count":50,"p50":1.0,"p90":1.0,"p99":999.0,"max":999.0}}"#;
        let data = BTreeMap::from([("x".to_string(), doc.to_string())]);
        let (records, errors) = Records::from_data(&data);
        assert!(errors.is_empty());
        let r = &records.by_key["x"];
        assert_eq!(r.drain.as_ref().unwrap().count, 1);
        assert_eq!(r.drain.as_ref().unwrap().p99, 10.0);
    }

    #[rstest]
    #[case(TargetGroup::Arn(ARN.into()), "k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef")]
    #[case(TargetGroup::Name("my-tg".into()), "my-tg")]
    #[case(TargetGroup::Arn("arn:odd/with spaces".into()), "arn_odd_with_spaces")]
    #[case(TargetGroup::Name("..".into()), "_..")]
    #[case(TargetGroup::Name("a/".repeat(150)), &"a_".repeat(150)[..253])]
    #[case(TargetGroup::Name("é".repeat(300)), &"_".repeat(253))]
    #[case::marker_twice(TargetGroup::Arn("arn:x:targetgroup/a:targetgroup/b".into()), "a_targetgroup.b")]
    #[case::colon_without_marker_first(
        TargetGroup::Arn("arn::targetgroup:targetgroup/a/b".into()),
        "a.b"
    )]
    #[case::marker_at_the_end(TargetGroup::Arn("arn:targetgroup/".into()), "_")]
    #[case::marker_without_colon(TargetGroup::Arn("targetgroup/a".into()), "targetgroup_a")]
    fn configmap_keys(#[case] group: TargetGroup, #[case] expected: &str) {
        assert_eq!(key(&group), expected);
        assert_eq!(key(&group), key_before(&group));
    }

    /// `key` as it was before it became one pass: the ConfigMap holds keys it wrote.
    fn key_before(group: &TargetGroup) -> String {
        let raw = match group {
            TargetGroup::Arn(arn) => match arn.split_once(":targetgroup/") {
                Some((_, rest)) => rest.replace('/', "."),
                None => arn.clone(),
            },
            TargetGroup::Name(name) => name.clone(),
        };
        let mut k: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        k.truncate(253);
        if k.is_empty() || k == "." || k == ".." {
            k = format!("_{k}");
        }
        k
    }

    proptest::proptest! {
        #[test]
        fn keys_are_the_keys_written_before(
            head in "(arn:aws:elasticloadbalancing:[a-z0-9-]{0,12}:[0-9]{0,12})?",
            marker in proptest::bool::ANY,
            rest in "([a-zA-Z0-9./_ :é\u{1F600}-]|\\.\\.){0,300}|[a-zA-Z0-9./_ :-]{240,300}",
        ) {
            let text = if marker { format!("{head}:targetgroup/{rest}") } else { format!("{head}{rest}") };
            for group in [TargetGroup::Arn(text.clone()), TargetGroup::Name(text.clone())] {
                let k = key(&group);
                proptest::prop_assert_eq!(&k, &key_before(&group));
                proptest::prop_assert!(k.len() <= 254 && !k.is_empty());
            }
        }
    }

    #[test]
    fn at_most_max_records_the_newest_kept() {
        let mut records = Records::default();
        for n in 0..(MAX_RECORDS + 3) {
            let r = records.entry(&TargetGroup::Name(format!("tg-{n:04}")), None);
            r.updated_at = Some(at(n as i64));
        }
        let data = records.to_data();
        assert_eq!(data.len(), MAX_RECORDS);
        let newest = format!("tg-{:04}", MAX_RECORDS + 2);
        assert!(!data.contains_key("tg-0000") && data.contains_key(&newest));
    }
}
