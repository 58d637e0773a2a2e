//! What every criterion bench of the workspace shares: its settings and a one-poll driver
//! for futures that must not wait.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::Criterion;

/// The workspace's criterion settings: 1 s of warm-up, 3 s of measurement, 50 samples.
#[must_use]
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

/// Polls `fut` once with a no-op waker and returns its output.
///
/// # Panics
/// When the future is not ready at once: a cached verify, a verify with warm keys and a DPoP
/// check with the memory replay store never wait, so a wait is a broken setup or a
/// regression worth failing loudly on.
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future awaited although nothing should have made it"),
    }
}
