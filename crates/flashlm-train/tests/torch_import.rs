//! `flashlm-export --torch`: checkpoints written by the original PyTorch FlashLM v4
//! (tests/fixtures/torch, made by scripts/reference/torch_fixture.py from the parity weights)
//! are packed, and the engine's logits equal PyTorch's logits for the same weights.

use std::path::{Path, PathBuf};
use std::process::Command;

use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model;
use flashlm_model::read_safetensors;

fn fixture(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(dir).join(name)
}

fn export(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flashlm-export")).args(args).output().unwrap()
}

fn export_torch(input: &Path, out: &Path) -> std::process::Output {
    let tok = fixture("torch", "tokenizer.json");
    export(&[
        "--torch",
        input.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--seq-len",
        "16",
    ])
}

#[test]
fn pytorch_checkpoints_run_with_pytorch_logits() {
    let expected = read_safetensors(&fixture("parity", "expected.safetensors")).unwrap();
    let batch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("parity", "batch.json")).unwrap()).unwrap();
    let t = batch["config"]["seq_len"].as_u64().unwrap() as usize;
    let tokens: Vec<u16> =
        batch["tokens"].as_array().unwrap()[..t].iter().map(|v| v.as_u64().unwrap() as u16).collect();
    let logits = &expected["logits"].1; // [batch, t, vocab]
    let vocab = logits.len() / (t * batch["batch"].as_u64().unwrap() as usize);
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny.pt", "tiny-state-dict.pt", "tiny.safetensors"] {
        let out = dir.path().join(format!("{name}.flm"));
        let o = export_torch(&fixture("torch", name), &out);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("d=16, blocks=2, h=32, k=8, seq=16, vocab=256"), "{stdout}");
        assert!(stdout.contains("total"), "{stdout}");
        let model = Model::from_bytes(&std::fs::read(&out).unwrap(), Kernel::detect_exact()).unwrap();
        let mut state = model.new_state();
        let mut worst = 0.0f32;
        for (i, &tok) in tokens.iter().enumerate() {
            let ours = model.forward(&mut state, tok);
            let theirs = &logits[i * vocab..(i + 1) * vocab];
            worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        }
        assert!(worst <= 1e-4, "{name}: engine logits differ from PyTorch by {worst}");
    }
}

#[test]
fn bad_pytorch_inputs_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.flm");
    let stderr = |o: std::process::Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    // Not a checkpoint, a missing file, no tokenizer.
    let e = stderr(export_torch(&fixture("torch", "tokenizer.json"), &out));
    assert!(e.contains("not a readable PyTorch checkpoint"), "{e}");
    let e = stderr(export_torch(&dir.path().join("missing.pt"), &out));
    assert!(e.contains("missing.pt"), "{e}");
    let pt = fixture("torch", "tiny.pt");
    let e = stderr(export(&["--torch", pt.to_str().unwrap(), "-o", out.to_str().unwrap()]));
    assert!(e.contains("--tokenizer"), "{e}");

    // Tensors that do not make a FlashLM model.
    let weights = read_safetensors(&fixture("torch", "tiny.safetensors")).unwrap();
    let write = |w: &flashlm_model::NamedTensors, name: &str| {
        let p = dir.path().join(name);
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
            .iter()
            .map(|(k, (shape, v))| {
                (k.clone(), shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(k, shape, b)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &p).unwrap();
        p
    };
    let mut w = weights.clone();
    w.remove("blocks.1.ffn.W_down.weight");
    let e = stderr(export_torch(&write(&w, "missing.safetensors"), &out));
    assert!(e.contains("blocks.1.ffn.W_down.weight"), "{e}");
    let mut w = weights.clone();
    let (shape, mut emb) = w["embedding.weight"].clone();
    emb[0] += 1.0;
    w.insert("head.weight".into(), (shape, emb));
    let e = stderr(export_torch(&write(&w, "untied.safetensors"), &out));
    assert!(e.contains("head.weight differs"), "{e}");
    let mut w = weights;
    w.insert("blocks.0.ffn.W_gate.weight".into(), (vec![32, 15], vec![0.0; 32 * 15]));
    let e = stderr(export_torch(&write(&w, "shape.safetensors"), &out));
    assert!(e.contains("W_gate"), "{e}");
    assert!(!out.exists(), "nothing is written for a refused checkpoint");
}
