//! The webhook end to end: recorded AdmissionReviews through the real router, bad input, and
//! a real TLS server. One test binary, to keep link time down.

mod admission;
mod bad_input;
mod common;
mod drain_wait;
mod limits;
mod ports;
mod properties;
mod reading;
mod rollout_lab;
mod rotation;
mod rotation_load;
mod tls;
mod waiter_injection;
