//! Serializing a model's parameters and tokenizer into a `.flm` file (docs/FORMAT.md).

use flashlm_core::params::{self, Role};
use flashlm_core::{Config, NORM_EPS, quant};
use flashlm_infer::format::{self, EmbeddingDtype, Header, Kind, TensorOut};
use flashlm_tokenizer::Tokenizer;

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

/// The embedding ([V, d] values) in the storage `dtype`; `out` makes the tensor from its kind,
/// scale and bytes.
fn embedding_tensor(
    values: &[f32],
    d: usize,
    dtype: EmbeddingDtype,
    out: impl Fn(Kind, f32, Vec<u8>) -> TensorOut,
) -> anyhow::Result<TensorOut> {
    Ok(match dtype {
        EmbeddingDtype::F32 => out(Kind::F32, 0.0, f32_bytes(values)),
        EmbeddingDtype::F16 => out(
            Kind::F16,
            0.0,
            values.iter().flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes()).collect(),
        ),
        EmbeddingDtype::Int8 => {
            let (q, scales) = quant::int8_rows(values, d);
            let mut data: Vec<u8> = q.into_iter().map(|c| c as u8).collect();
            data.extend(f32_bytes(&scales));
            out(Kind::Int8Rows, 0.0, data)
        }
        EmbeddingDtype::Int4 => {
            let data = quant::int4_groups(values, values.len() / d.max(1), d).map_err(|e| {
                anyhow::anyhow!("--embedding int4 needs d to be a multiple of {}: {e}", quant::INT4_GROUP)
            })?;
            out(Kind::Int4Groups, 0.0, data)
        }
    })
}

/// Serialize the parameters (name, shape, values; in the parameter table's order, each of
/// the table's shape) of a model of shape `cfg`, and its tokenizer.
pub fn pack(
    cfg: &Config,
    named: &[(String, Vec<usize>, Vec<f32>)],
    tok: &Tokenizer,
    embedding: EmbeddingDtype,
) -> anyhow::Result<(Vec<u8>, ExportReport)> {
    let cfg = *cfg;
    anyhow::ensure!(
        tok.vocab_size() == cfg.vocab_size,
        "the tokenizer has {} ids but the model's embedding has {} rows",
        tok.vocab_size(),
        cfg.vocab_size
    );
    let table = params::table(&cfg);
    anyhow::ensure!(
        named.iter().map(|p| &p.0).eq(table.iter().map(|t| &t.name)),
        "the parameters are not those of the parameter table (names or order differ)"
    );
    let mut tensors = Vec::with_capacity(named.len() + 3);
    for ((name, shape, values), spec) in named.iter().zip(&table) {
        anyhow::ensure!(
            *shape == spec.shape && values.len() == spec.numel(),
            "{name} has shape {shape:?} ({} values); {cfg} needs {:?}",
            values.len(),
            spec.shape
        );
        let out = |kind: Kind, scale: f32, data: Vec<u8>| TensorOut {
            name: name.clone(),
            kind,
            shape: format::stored_shape(spec.role, shape),
            scale,
            data,
        };
        tensors.push(match spec.role {
            Role::Embedding => embedding_tensor(values, shape[1], embedding, out)?,
            Role::Ternary => {
                let (codes, alpha) = quant::ternary_codes(values);
                out(Kind::Ternary, alpha, format::pack_ternary(&codes))
            }
            Role::Norm | Role::ConvTaps => out(Kind::F32, 0.0, f32_bytes(values)),
        });
    }
    // The tokenizer travels with the model.
    let ids = tok.id_to_base().to_vec();
    let mut bytes = Vec::new();
    let mut offsets = vec![0u32];
    for id in 0..tok.vocab_size() {
        bytes.extend_from_slice(tok.token_bytes(id as u16));
        offsets.push(bytes.len() as u32);
    }
    let vector = |name: &str, kind: Kind, len: usize, data: Vec<u8>| TensorOut {
        name: name.into(),
        kind,
        shape: vec![len],
        scale: 0.0,
        data,
    };
    tensors.push(vector(format::TOKENIZER_IDS, Kind::U32, ids.len(), u32_bytes(&ids)));
    tensors.push(vector(format::TOKENIZER_OFFSETS, Kind::U32, offsets.len(), u32_bytes(&offsets)));
    // A tensor has at least one element: a vocabulary of empty tokens stores one zero byte.
    let n = bytes.len().max(1);
    tensors.push(vector(
        format::TOKENIZER_BYTES,
        Kind::U8,
        n,
        if bytes.is_empty() { vec![0] } else { bytes },
    ));

    let header = Header { config: cfg, norm_eps: NORM_EPS as f32, embedding };
    let out = format::write(&header, &tensors)?;
    let mut report = ExportReport { total: out.len(), ..Default::default() };
    let mut add = |part: &str, n: usize| match report.parts.iter_mut().find(|(p, _)| p == part) {
        Some((_, t)) => *t += n,
        None => report.parts.push((part.to_string(), n)),
    };
    add("header + directory", format::HEADER_LEN + tensors.len() * format::ENTRY_LEN);
    for t in &tensors {
        let part = if t.name == params::EMBEDDING {
            "embedding (tied head)"
        } else if t.kind == Kind::Ternary {
            "ternary matrices"
        } else if [format::TOKENIZER_IDS, format::TOKENIZER_OFFSETS, format::TOKENIZER_BYTES]
            .contains(&t.name.as_str())
        {
            "tokenizer"
        } else {
            "norms and conv taps (f32)"
        };
        add(part, t.data.len());
    }
    Ok((out, report))
}
