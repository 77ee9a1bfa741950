//! The Describe scheduler: every ELBv2 call the watcher makes in a tick, in one round.
//!
//! One `DescribeTargetHealth` per target group (with the targets the gate writer and the
//! departure follower ask about), then the facts of the target groups that are due; each call
//! takes its turn in the one token bucket when it is made, in that order, so facts never
//! delay a gate. Answers are handed out as they arrive: with many target groups behind the
//! bucket, the last can come seconds after the first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::aws::{AwsError, Elb};
use crate::elb::{Facts, TargetGroup, TargetHealth, TargetId};

/// One answer of a round.
pub enum Answer {
    Health {
        group: TargetGroup,
        arn: String,
        result: Result<HashMap<TargetId, TargetHealth>, AwsError>,
    },
    Facts {
        group: TargetGroup,
        arn: String,
        result: Result<Facts, AwsError>,
    },
}

/// A round of calls under way.
pub struct Round {
    calls: JoinSet<Answer>,
    pub health_calls: usize,
    pub facts_calls: usize,
}

impl Round {
    /// The next answer to arrive; `None` once every call has answered.
    pub async fn next(&mut self) -> Option<Answer> {
        loop {
            match self.calls.join_next().await? {
                Ok(answer) => return Some(answer),
                // A call task cannot panic short of a bug in the SDK; its gates retry next tick.
                Err(error) => warn!(%error, "an ELB call task failed"),
            }
        }
    }
}

#[derive(Default)]
pub struct Scheduler {
    /// Target group names → ARNs, for bindings that only name their target group.
    arns: HashMap<String, String>,
    /// Target groups whose last call failed: their outage is logged once, not every tick.
    failing: HashSet<TargetGroup>,
}

impl Scheduler {
    /// Start a round: health first, then facts.
    pub async fn start(
        &mut self,
        elb: &Elb,
        health: BTreeMap<TargetGroup, BTreeSet<TargetId>>,
        facts: Vec<TargetGroup>,
    ) -> Round {
        let arns = self
            .resolve(elb, health.keys().chain(facts.iter()).cloned().collect())
            .await;
        let mut round = Round {
            calls: JoinSet::new(),
            health_calls: 0,
            facts_calls: 0,
        };
        for (group, targets) in health {
            let Some(arn) = arns.get(&group).cloned() else {
                continue;
            };
            let targets: Vec<TargetId> = targets.into_iter().collect();
            // Made here, in target group order: each call's turn in the token bucket is taken now.
            let call = elb.describe_target_health(&arn, &targets);
            round.health_calls += 1;
            round.calls.spawn(async move {
                let result = call.await.map(|found| found.into_iter().collect());
                Answer::Health { group, arn, result }
            });
        }
        for group in facts {
            let Some(arn) = arns.get(&group).cloned() else {
                continue;
            };
            let call = elb.target_group_facts(&arn);
            round.facts_calls += 1;
            round.calls.spawn(async move {
                let result = call.await;
                Answer::Facts { group, arn, result }
            });
        }
        round
    }

    /// Log a failing target group once, and its recovery.
    pub fn note<T>(&mut self, group: &TargetGroup, result: &Result<T, AwsError>) {
        match result {
            Ok(_) => {
                if self.failing.remove(group) {
                    info!(target_group = %group, "target group readable again");
                }
            }
            Err(error) => self.log_failure(group, error),
        }
    }

    fn log_failure(&mut self, group: &TargetGroup, error: &AwsError) {
        if self.failing.insert(group.clone()) {
            warn!(target_group = %group, %error, "cannot read the target group; gates wait and retry every tick");
        }
    }

    /// ARNs for every group; names are looked up once and cached.
    async fn resolve(
        &mut self,
        elb: &Elb,
        groups: BTreeSet<TargetGroup>,
    ) -> HashMap<TargetGroup, String> {
        let mut arns = HashMap::new();
        for group in groups {
            match &group {
                TargetGroup::Arn(arn) => {
                    arns.insert(group.clone(), arn.clone());
                }
                TargetGroup::Name(name) => {
                    if !self.arns.contains_key(name) {
                        match elb.target_group_arn(name).await {
                            Ok(Some(arn)) => {
                                self.arns.insert(name.clone(), arn);
                            }
                            Ok(None) => {}
                            Err(error) => self.log_failure(&group, &error),
                        }
                    }
                    if let Some(arn) = self.arns.get(name) {
                        arns.insert(group.clone(), arn.clone());
                    }
                }
            }
        }
        arns
    }
}
