//! Admission control: the server answers `ThrottlingException` (HTTP 400, as AWS does) instead of
//! queueing without bound when it is saturated (too many requests in flight) or when an account
//! exceeds its configured request rate. Rejected requests cost almost nothing, so memory stays
//! flat under overload.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::aws_error::AwsJsonError;

/// Limits shared by all HTTP workers.
pub struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    per_account: Option<DefaultKeyedRateLimiter<String>>,
}

impl Admission {
    /// `max_in_flight` requests at once; `per_account_per_sec` requests per second and account
    /// (0: unlimited), with bursts of the same size.
    pub fn new(max_in_flight: usize, per_account_per_sec: u32) -> Self {
        let per_account = NonZeroU32::new(per_account_per_sec).map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        Admission {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            per_account,
        }
    }

    /// A permit to run one request (dropped when its response is built), or the throttling error.
    pub fn admit(&self, account: &str) -> Result<OwnedSemaphorePermit, AwsJsonError> {
        if let Some(limiter) = &self.per_account {
            if limiter.check_key(&account.to_string()).is_err() {
                metrics::counter!(crate::telemetry::THROTTLED, "cause" => "account-rate").increment(1);
                return Err(AwsJsonError::throttling(format!(
                    "account {account} exceeds its request rate; retry later"
                )));
            }
        }
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::telemetry::THROTTLED, "cause" => "in-flight").increment(1);
            AwsJsonError::throttling(format!(
                "the service is handling {} requests already; retry later",
                self.max_in_flight
            ))
        })
    }
}
