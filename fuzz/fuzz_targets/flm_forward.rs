//! A fuzzed `.flm` file: loaded with one of the kernels this CPU runs and, when the reader
//! accepts it, a few tokens run through the forward pass (one at a time and batched) and
//! decoded. Nothing may panic; refusals are fine.
#![no_main]

use flashlm_infer::model::Model;
use flashlm_infer::kernels::Kernel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let kernels = Kernel::available();
    let kernel = kernels[data.len() % kernels.len()];
    let Ok(model) = Model::from_bytes(data, kernel) else { return };
    let v = model.config.vocab_size;
    let tokens: Vec<u16> = (0..4).map(|i| ((i * 7 + 1) % v) as u16).collect();
    let mut state = model.new_state();
    for &t in &tokens {
        let logits = model.forward(&mut state, t);
        assert_eq!(logits.len(), v);
        let _ = flashlm_infer::vmath::all_finite(logits);
    }
    let mut logits = vec![0.0f32; tokens.len() * v];
    model.forward_batch(&mut state, &tokens, Some(&mut logits));
    let _ = model.tokenizer.decode(&tokens);
});
