//! The learning-rate schedules: linear warmup, then a cosine over the planned steps (the
//! original's `get_lr`) or over the time limit.

/// Learning rate at `step`: linear warmup from 0 to `peak` over `warmup` steps, then cosine
/// down to `min` at `total` steps (the original's `get_lr`).
pub fn lr_at(step: u64, total: u64, warmup: u64, peak: f64, min: f64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Learning rate for a run planned by time (`--lr-schedule time`): the same linear warmup over
/// `warmup` steps, then a cosine from `peak` to `min` over the training time left after
/// warmup, so the schedule ends exactly at the time limit however fast the steps are.
/// `secs` is the training time so far, `warmup_end_secs` the time at which warmup ended
/// (`None` while warming up), `limit_secs` the time limit.
pub fn lr_at_time(
    step: u64,
    warmup: u64,
    secs: f64,
    warmup_end_secs: Option<f64>,
    limit_secs: f64,
    peak: f64,
    min: f64,
) -> f64 {
    match warmup_end_secs {
        Some(w) if step >= warmup => {
            let progress = ((secs - w) / (limit_secs - w).max(1e-9)).clamp(0.0, 1.0);
            min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        _ => peak * step.min(warmup) as f64 / warmup.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_schedule_warms_up_by_steps_then_follows_the_clock() {
        let lr = |step, secs, w| lr_at_time(step, 10, secs, w, 100.0, 1.0, 0.0);
        assert_eq!(lr(0, 0.0, None), 0.0);
        assert_eq!(lr(5, 3.0, None), 0.5);
        // Warmup ended at 20 s: the cosine spans the 80 s left.
        assert_eq!(lr(10, 20.0, Some(20.0)), 1.0);
        assert!((lr(50, 60.0, Some(20.0)) - 0.5).abs() < 1e-12);
        assert!(lr(90, 100.0, Some(20.0)).abs() < 1e-12);
        assert!(lr(99, 130.0, Some(20.0)).abs() < 1e-12, "past the limit it stays at min");
        // The same point in time gives the same rate whatever the step count.
        assert_eq!(lr(40, 60.0, Some(20.0)), lr(400, 60.0, Some(20.0)));
    }

    #[test]
    fn lr_schedule_matches_the_original() {
        assert_eq!(lr_at(0, 1000, 500, 4e-3, 1e-5), 0.0);
        assert!((lr_at(250, 1000, 500, 4e-3, 1e-5) - 2e-3).abs() < 1e-12);
        assert!((lr_at(500, 1000, 500, 4e-3, 1e-5) - 4e-3).abs() < 1e-12);
        assert!((lr_at(750, 1000, 500, 4e-3, 1e-5) - (1e-5 + 0.5 * (4e-3 - 1e-5))).abs() < 1e-12);
        assert!((lr_at(1000, 1000, 500, 4e-3, 1e-5) - 1e-5).abs() < 1e-12);
    }
}
