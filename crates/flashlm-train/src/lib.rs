//! The `flashlm-train` and `flashlm-export` binaries.
//!
//! Not built yet: the trainer lands with issue 3 and the exporter with issue 4. Data
//! preparation (vocabulary and token caches) is available today as `flashlm-data prepare`.
