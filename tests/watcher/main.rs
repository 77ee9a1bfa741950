//! The watcher shell: its Kubernetes I/O against kube-rs's tower-test mock (every request
//! asserted), its ELB I/O against the scriptable fake ELBv2 through the real SDK, and the real
//! loop end to end.

mod chaos;
mod departures;
mod drain_waits;
mod election;
mod end_to_end;
mod facts;
#[path = "../support/fake_elb.rs"]
mod fake_elb;
mod harness;
mod kube_io;
mod real_waiter;
