//! Fuzz the `.flm` reader and loader: any bytes must give Ok or Err, never a panic, an
//! out-of-bounds access or an allocation the input does not justify.
//! cargo +nightly fuzz run read_model   (from crates/flashlm-infer)
#![no_main]

use flashlm_infer::model::Model;
use flashlm_infer::kernels::Kernel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = flashlm_infer::format::read(data);
    let _ = Model::from_bytes(data, Kernel::Scalar);
});
