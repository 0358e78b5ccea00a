//! Packing a trained model into a `.flm` file for `flashlm-infer`.

use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::{self, EmbeddingDtype, Header, Kind, TensorOut};
use flashlm_model::{Bolt, NORM_EPS};

/// Size of each part of an exported file.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// (part, bytes) in file order.
    pub parts: Vec<(String, usize)>,
    /// Whole file.
    pub total: usize,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialize `model` (trained with context `seq_len`) and its tokenizer.
pub fn export(
    model: &Bolt,
    seq_len: usize,
    tok: &Tokenizer,
    embedding: EmbeddingDtype,
) -> anyhow::Result<(Vec<u8>, ExportReport)> {
    let cfg = model.config(seq_len);
    anyhow::ensure!(
        tok.vocab_size() == cfg.vocab_size,
        "the tokenizer has {} ids but the model's embedding has {} rows",
        tok.vocab_size(),
        cfg.vocab_size
    );
    let mut tensors = Vec::new();
    let params = model.named_params();
    for p in &params {
        let t = if p.name == "embedding.weight" {
            let (v, d) = (p.shape[0], p.shape[1]);
            match embedding {
                EmbeddingDtype::F32 => TensorOut {
                    name: p.name.clone(),
                    kind: Kind::F32,
                    shape: p.shape.clone(),
                    scale: 0.0,
                    data: f32_bytes(&p.values),
                },
                EmbeddingDtype::F16 => TensorOut {
                    name: p.name.clone(),
                    kind: Kind::F16,
                    shape: p.shape.clone(),
                    scale: 0.0,
                    data: p
                        .values
                        .iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
                        .collect(),
                },
                EmbeddingDtype::Int8 => {
                    let mut q = Vec::with_capacity(v * d + 4 * v);
                    let mut scales = Vec::with_capacity(v);
                    for row in p.values.chunks(d) {
                        let m = row.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
                        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
                        q.extend(row.iter().map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8 as u8));
                        scales.push(s);
                    }
                    q.extend(f32_bytes(&scales));
                    TensorOut {
                        name: p.name.clone(),
                        kind: Kind::Int8Rows,
                        shape: p.shape.clone(),
                        scale: 0.0,
                        data: q,
                    }
                }
                EmbeddingDtype::Int4 => TensorOut {
                    name: p.name.clone(),
                    kind: Kind::Int4Groups,
                    shape: p.shape.clone(),
                    scale: 0.0,
                    data: format::quantize_int4_groups(&p.values, v, d).map_err(|e| {
                        anyhow::anyhow!(
                            "--embedding int4 needs d to be a multiple of {}: {e}",
                            format::INT4_GROUP
                        )
                    })?,
                },
            }
        } else if p.name.ends_with(".weight") && p.shape.len() == 2 {
            let (codes, alpha) = flashlm_model::ternary_codes(&p.values);
            TensorOut {
                name: p.name.clone(),
                kind: Kind::Ternary,
                shape: p.shape.clone(),
                scale: alpha,
                data: format::pack_ternary(&codes),
            }
        } else if p.name.ends_with("conv.weight") {
            // [d, 1, k] -> [d, k]
            TensorOut {
                name: p.name.clone(),
                kind: Kind::F32,
                shape: vec![p.shape[0], p.shape[2]],
                scale: 0.0,
                data: f32_bytes(&p.values),
            }
        } else {
            TensorOut {
                name: p.name.clone(),
                kind: Kind::F32,
                shape: p.shape.clone(),
                scale: 0.0,
                data: f32_bytes(&p.values),
            }
        };
        tensors.push(t);
    }
    // The tokenizer travels with the model.
    let ids = tok.id_to_base().to_vec();
    let mut bytes = Vec::new();
    let mut offsets = vec![0u32];
    for id in 0..tok.vocab_size() {
        bytes.extend_from_slice(tok.token_bytes(id as u16));
        offsets.push(bytes.len() as u32);
    }
    tensors.push(TensorOut {
        name: "tokenizer.id_to_base".into(),
        kind: Kind::U32,
        shape: vec![ids.len()],
        scale: 0.0,
        data: u32_bytes(&ids),
    });
    tensors.push(TensorOut {
        name: "tokenizer.offsets".into(),
        kind: Kind::U32,
        shape: vec![offsets.len()],
        scale: 0.0,
        data: u32_bytes(&offsets),
    });
    tensors.push(TensorOut {
        name: "tokenizer.bytes".into(),
        kind: Kind::U8,
        shape: vec![bytes.len().max(1)],
        scale: 0.0,
        data: if bytes.is_empty() { vec![0] } else { bytes },
    });

    let header = Header {
        vocab_size: cfg.vocab_size,
        dim: cfg.dim,
        n_blocks: cfg.n_blocks,
        hidden: cfg.glu_hidden,
        kernel_size: cfg.kernel_size,
        seq_len,
        norm_eps: NORM_EPS as f32,
        embedding,
    };
    let out = format::write(&header, &tensors)?;
    let mut report = ExportReport { total: out.len(), ..Default::default() };
    let mut add = |part: &str, n: usize| match report.parts.iter_mut().find(|(p, _)| p == part) {
        Some((_, t)) => *t += n,
        None => report.parts.push((part.to_string(), n)),
    };
    add("header + directory", format::HEADER_LEN + tensors.len() * format::ENTRY_LEN);
    for t in &tensors {
        let part = if t.name == "embedding.weight" {
            "embedding (tied head)"
        } else if t.kind == Kind::Ternary {
            "ternary matrices"
        } else if t.name.starts_with("tokenizer.") {
            "tokenizer"
        } else {
            "norms and conv taps (f32)"
        };
        add(part, t.data.len());
    }
    Ok((out, report))
}
