//! Property tests of the `.flm` container: write -> read gives back exactly what was written,
//! and ternary packing round-trips for every length.

use flashlm_infer::format::{self, EmbeddingDtype, Header, Kind, TensorOut};
use flashlm_infer::model::Config;
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::F32),
        Just(Kind::F16),
        Just(Kind::Ternary),
        Just(Kind::Int8Rows),
        Just(Kind::U32),
        Just(Kind::U8),
        Just(Kind::Int4Groups)
    ]
}

/// Tensors with unique names, random kinds and shapes, and random bytes of exactly the length
/// each kind and shape need.
fn tensors() -> impl Strategy<Value = Vec<TensorOut>> {
    prop::collection::vec(
        (kind(), prop::collection::vec(1usize..6, 1..=4), any::<f32>(), any::<u64>()),
        0..12,
    )
    .prop_map(|parts| parts.into_iter().enumerate().map(|(i, p)| tensor(i, p)).collect())
}

fn tensor(i: usize, (kind, shape, scale, seed): (Kind, Vec<usize>, f32, u64)) -> TensorOut {
    // Int4 groups are 2-D with whole groups of 32 per row.
    let shape = if kind == Kind::Int4Groups { vec![shape[0], 32 * shape[shape.len() - 1]] } else { shape };
    {
        {
            let n = kind.byte_len(&shape).unwrap();
            let mut r = flashlm_core::rng::XorShift64::new(seed);
            let data = (0..n).map(|_| r.next_u64() as u8).collect();
            // Ternary scales must be finite and in [0, MAX_TERNARY_SCALE] (the writer refuses
            // others, see below).
            let ok = scale.is_finite() && (0.0..=format::MAX_TERNARY_SCALE).contains(&scale);
            let scale = if kind != Kind::Ternary || ok { scale } else { 0.5 };
            TensorOut { name: format!("t{i}.{}", "x".repeat(i % 20)), kind, shape, scale, data }
        }
    }
}

fn header() -> impl Strategy<Value = Header> {
    (
        1usize..=65_536,
        1usize..4096,
        1usize..64,
        1usize..16_384,
        1usize..64,
        1usize..100_000,
        1e-9f32..1e-2,
        0..4u8,
    )
        .prop_map(|(vocab_size, dim, n_blocks, glu_hidden, conv_taps, seq_len, norm_eps, e)| Header {
            config: Config { vocab_size, dim, n_blocks, glu_hidden, conv_taps, seq_len },
            norm_eps,
            embedding: [EmbeddingDtype::F32, EmbeddingDtype::F16, EmbeddingDtype::Int8, EmbeddingDtype::Int4]
                [e as usize],
        })
        // at most Config::MAX_PARAMS parameters, as every reader demands
        .prop_filter("too many parameters", |h| h.config.validate().is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn write_then_read_is_identity(h in header(), tensors in tensors()) {
        let bytes = format::write(&h, &tensors).unwrap();
        prop_assert_eq!(bytes.len() % 64, 0);
        let f = format::read(&bytes).unwrap();
        prop_assert_eq!(f.header, h);
        // The oldest version that holds these tensors: 2 only for int4 groups.
        let v2 = h.embedding == EmbeddingDtype::Int4 || tensors.iter().any(|t| t.kind == Kind::Int4Groups);
        prop_assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), if v2 { 2 } else { 1 });
        if v2 {
            // Marked as version 1, the same bytes are refused, not misread.
            let mut old = bytes.clone();
            old[8..12].copy_from_slice(&1u32.to_le_bytes());
            prop_assert!(format::read(&old).is_err());
        }
        prop_assert_eq!(f.tensors.len(), tensors.len());
        for t in &tensors {
            let r = f.tensors[&t.name];
            prop_assert_eq!(r.kind, t.kind);
            prop_assert_eq!(r.dims(), &t.shape[..]);
            prop_assert_eq!(r.scale.to_bits(), t.scale.to_bits());
            prop_assert_eq!(r.data, &t.data[..]);
            prop_assert_eq!(r.data.as_ptr() as usize % 64, bytes.as_ptr() as usize % 64);
        }
        // Any truncation is refused, never a panic.
        for cut in [0, 7, 64, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(format::read(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would(h in header(), tensors in tensors(), scale in -1e30f32..-1e-30) {
        let mut bad = tensors.clone();
        bad.push(TensorOut { name: "neg".into(), kind: Kind::Ternary, shape: vec![1], scale, data: vec![0x55] });
        prop_assert!(format::write(&h, &bad).is_err());
        let mut huge = tensors.clone();
        huge.push(TensorOut { name: "huge".into(), kind: Kind::Ternary, shape: vec![1], scale: 2.0 * format::MAX_TERNARY_SCALE - scale, data: vec![0x55] });
        prop_assert!(format::write(&h, &huge).is_err(), "scale {}", 2.0 * format::MAX_TERNARY_SCALE - scale);
        let mut dup = tensors;
        if let Some(t) = dup.first().cloned() {
            dup.push(t);
            prop_assert!(format::write(&h, &dup).is_err());
        }
        let zero_vocab = Header { config: Config { vocab_size: 0, ..h.config }, ..h };
        prop_assert!(format::write(&zero_vocab, &[]).is_err());
        let nan_eps = Header { norm_eps: f32::NAN, ..h };
        prop_assert!(format::write(&nan_eps, &[]).is_err());
    }

    #[test]
    fn ternary_pack_roundtrips(w in prop::collection::vec(-1i8..=1, 0..300)) {
        let packed = format::pack_ternary(&w);
        prop_assert_eq!(packed.len(), w.len().div_ceil(4));
        prop_assert_eq!(format::unpack_ternary(&packed, w.len()).unwrap(), w);
    }
}
