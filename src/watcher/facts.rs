//! The facts refresher: which target groups' facts (`DescribeTargetGroups` and
//! `DescribeTargetGroupAttributes`) to read this tick. Only target groups that serve gated
//! pods, each at most every `refresh`; none at all when nothing is gated.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tracing::{debug, warn};

use super::records::RecordKeeper;
use crate::aws::AwsError;
use crate::elb::{Facts, TargetGroup};

/// After a failed read, try again this much sooner than a full refresh.
const RETRY_AFTER: SignedDuration = SignedDuration::from_secs(60);

pub struct FactsRefresher {
    /// `None`: facts are never read.
    refresh: Option<SignedDuration>,
    /// When each gated target group's facts were last asked for (or, after a failure, the
    /// time that makes the next ask come [`RETRY_AFTER`] later).
    asked: HashMap<TargetGroup, Timestamp>,
}

impl FactsRefresher {
    pub fn new(refresh: Option<Duration>) -> FactsRefresher {
        FactsRefresher {
            refresh: refresh
                .filter(|r| !r.is_zero())
                .and_then(|r| SignedDuration::try_from(r).ok()),
            asked: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.refresh.is_some()
    }

    /// The groups of `gated` whose facts are due, marked as asked for now. A group a new
    /// leader finds fresh facts for in the records waits for them to age.
    pub fn due(
        &mut self,
        gated: &BTreeSet<TargetGroup>,
        records: &RecordKeeper,
        now: Timestamp,
    ) -> Vec<TargetGroup> {
        let Some(refresh) = self.refresh else {
            return Vec::new();
        };
        self.asked.retain(|g, _| gated.contains(g));
        let mut due = Vec::new();
        for group in gated {
            let last = match self.asked.get(group) {
                Some(t) => Some(*t),
                None => records.facts_at(group),
            };
            match last {
                Some(t) if now.duration_since(t) < refresh => {
                    self.asked.insert(group.clone(), t);
                }
                _ => {
                    self.asked.insert(group.clone(), now);
                    due.push(group.clone());
                }
            }
        }
        due
    }

    /// When the next group's facts come due; `None` when nothing is gated or facts are off.
    pub fn next_due(&self) -> Option<Timestamp> {
        let refresh = self.refresh?;
        self.asked.values().min().map(|t| *t + refresh)
    }

    /// Take an answer into the records.
    pub fn answered(
        &mut self,
        group: &TargetGroup,
        arn: &str,
        result: Result<Facts, AwsError>,
        now: Timestamp,
        records: &mut RecordKeeper,
    ) {
        match result {
            Ok(facts) => {
                debug!(target_group = %group.name(Some(arn)), ?facts, "target group facts read");
                records.set_facts(group, arn, facts, now);
            }
            Err(error) => {
                warn!(target_group = %group.name(Some(arn)), %error, "could not read the target group's facts; trying again in a minute");
                if let Some(refresh) = self.refresh {
                    self.asked
                        .insert(group.clone(), now - refresh + RETRY_AFTER.min(refresh));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn groups(names: &[&str]) -> BTreeSet<TargetGroup> {
        names
            .iter()
            .map(|n| TargetGroup::Name(n.to_string()))
            .collect()
    }

    #[test]
    fn each_gated_group_at_most_every_refresh() {
        let mut f = FactsRefresher::new(Some(Duration::from_secs(600)));
        let records = RecordKeeper::new(None);
        let gated = groups(&["a", "b"]);
        assert_eq!(f.due(&gated, &records, at(0)).len(), 2);
        assert!(f.due(&gated, &records, at(1)).is_empty());
        assert!(f.due(&gated, &records, at(599)).is_empty());
        assert_eq!(f.next_due(), Some(at(600)));
        assert_eq!(f.due(&gated, &records, at(600)).len(), 2);
        // A group that is no longer gated is forgotten, and costs nothing.
        assert_eq!(
            f.due(&groups(&["c"]), &records, at(601)),
            vec![TargetGroup::Name("c".into())]
        );
        assert_eq!(f.next_due(), Some(at(1201)));
        assert!(f.due(&BTreeSet::new(), &records, at(5000)).is_empty());
        assert_eq!(f.next_due(), None, "nothing gated: nothing due");
    }

    #[test]
    fn a_failure_is_retried_after_a_minute() {
        let mut f = FactsRefresher::new(Some(Duration::from_secs(600)));
        let mut records = RecordKeeper::new(None);
        let gated = groups(&["a"]);
        let group = TargetGroup::Name("a".into());
        f.due(&gated, &records, at(0));
        f.answered(
            &group,
            "arn",
            Err(AwsError::Other("down".into())),
            at(1),
            &mut records,
        );
        assert!(f.due(&gated, &records, at(60)).is_empty());
        assert_eq!(f.due(&gated, &records, at(61)).len(), 1);
    }

    #[test]
    fn off_means_no_calls() {
        let mut f = FactsRefresher::new(Some(Duration::ZERO));
        assert!(!f.enabled());
        assert!(
            f.due(&groups(&["a"]), &RecordKeeper::new(None), at(0))
                .is_empty()
        );
        assert_eq!(f.next_due(), None);
    }
}
