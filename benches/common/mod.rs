//! Settings shared by the criterion benches.

use criterion::Criterion;

/// Short runs (0.5 s warm-up, 2 s measured): the machine is noisy, so compare medians of
/// repeated runs rather than lengthening one.
pub fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}
