//! The engine against a committed golden file (burn's outputs for a tiny model), and the
//! reader against damaged files.

use std::path::PathBuf;

use flashlm_infer::format::{self, FormatError};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model;
use flashlm_infer::sample::argmax;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/engine").join(name)
}

#[test]
fn engine_matches_golden_for_every_kernel() {
    let bytes = std::fs::read(fixture("tiny.flm")).unwrap();
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("golden.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u16> {
        golden[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u16).collect()
    };
    let seq = ids("sequence");
    let expect: Vec<f32> =
        golden["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let prompt = ids("prompt");
    let greedy = ids("greedy");
    for (k, lack) in Kernel::unavailable() {
        eprintln!("skipped kernel {}: this CPU has no {lack}", k.name());
    }
    // The int8-activation kernels round every ternary layer's input: close, not exact.
    for kernel in Kernel::available().into_iter().filter(|k| !k.is_exact()) {
        let m = Model::from_bytes(&bytes, kernel).unwrap();
        let mut s = m.new_state();
        let (mut err2, mut ref2) = (0.0f64, 0.0f64);
        for (pos, &t) in seq.iter().enumerate() {
            let l = m.forward(&mut s, t);
            for (j, &x) in l.iter().enumerate() {
                let e = f64::from(expect[pos * l.len() + j]);
                err2 += (f64::from(x) - e).powi(2);
                ref2 += e * e;
            }
        }
        let ratio = (err2 / ref2).sqrt();
        // Measured 0.023 for int8 and 0.087 for 6-bit inputs on this random model (its logits are small, so the rounding of
        // the inputs weighs more than in a trained one); the bound grows with the rounding
        // step. A wrong kernel gives about 1.
        let levels = f64::from(kernel.input_levels().expect("int8 kernels have levels"));
        assert!(ratio <= 6e-2 * 127.0 / levels, "{kernel:?}: rms logit error / rms logit = {ratio}");
    }
    for kernel in Kernel::available_exact() {
        let m = Model::from_bytes(&bytes, kernel).unwrap();
        let v = m.config.vocab_size;
        let mut s = m.new_state();
        for (pos, &t) in seq.iter().enumerate() {
            let l = m.forward(&mut s, t);
            for j in 0..v {
                let d = (l[j] - expect[pos * v + j]).abs();
                assert!(d <= 1e-4, "{kernel:?} pos {pos} id {j}: {} vs {}", l[j], expect[pos * v + j]);
            }
        }
        let mut s = m.new_state();
        let mut out = prompt.clone();
        for &t in &prompt[..prompt.len() - 1] {
            m.feed(&mut s, t);
        }
        let mut next = argmax(m.forward(&mut s, *prompt.last().unwrap())) as u16;
        while out.len() < greedy.len() {
            out.push(next);
            next = argmax(m.forward(&mut s, next)) as u16;
        }
        assert_eq!(out, greedy, "{kernel:?}");
    }
}

#[test]
fn damaged_files_are_refused_without_panicking() {
    let bytes = std::fs::read(fixture("tiny.flm")).unwrap();
    assert!(matches!(format::read(b"GGUF\0\0\0\0rest"), Err(FormatError::Magic)));
    let mut v2 = bytes.clone();
    v2[8] = 9;
    let e = Model::from_bytes(&v2, Kernel::Scalar).unwrap_err().to_string();
    assert!(e.contains("version 9") && e.contains("re-export"), "{e}");
    // Every truncation is an error, never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        assert!(Model::from_bytes(&bytes[..cut], Kernel::Scalar).is_err(), "accepted a file cut at {cut}");
    }
    // Flipping bytes anywhere never panics (it may still load if only weights changed).
    let mut state = 0x1234_5678u64;
    for _ in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut b = bytes.clone();
        let i = (state % b.len() as u64) as usize;
        b[i] ^= 1 << (state >> 60);
        let _ = Model::from_bytes(&b, Kernel::Scalar);
    }
    // A huge claimed dimension is refused before any allocation.
    let mut big = bytes.clone();
    big[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Model::from_bytes(&big, Kernel::Scalar).is_err());
}

#[test]
fn write_read_round_trip() {
    let bytes = std::fs::read(fixture("tiny.flm")).unwrap();
    let f = format::read(&bytes).unwrap();
    let mut tensors: Vec<format::TensorOut> = f
        .tensors
        .iter()
        .map(|(name, t)| format::TensorOut {
            name: name.clone(),
            kind: t.kind,
            shape: t.dims().to_vec(),
            scale: t.scale,
            data: t.data.to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let again = format::write(&f.header, &tensors).unwrap();
    let g = format::read(&again).unwrap();
    assert_eq!(g.header, f.header);
    assert_eq!(g.tensors.len(), f.tensors.len());
    for (name, t) in &f.tensors {
        let u = &g.tensors[name];
        assert_eq!(
            (u.kind, u.dims(), u.scale.to_bits(), u.data),
            (t.kind, t.dims(), t.scale.to_bits(), t.data)
        );
    }
}
