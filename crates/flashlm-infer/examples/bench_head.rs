//! Output-head speed per embedding storage, weights hot in cache (single thread).
//! cargo run --release -p flashlm-infer --example bench_head -- [V=10000] [D=192]

use std::time::Instant;

use flashlm_core::quant::int4_groups;
use flashlm_infer::head4::{Int4Embedding, Variant};
use flashlm_infer::kernels::head::{Embedding, HeadPath, blocked_int8};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let v: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10000);
    let d: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(192);
    let w: Vec<f32> = (0..v * d).map(|i| ((i as f32) * 0.618).sin() * 0.1).collect();
    let q: Vec<i8> = w.iter().map(|&x| (x * 1270.0).round() as i8).collect();
    let int8 = Embedding::Int8 { blocked: blocked_int8(&q, v, d), q, scale: vec![0.01; v] };
    let int4 = Embedding::Int4(
        Int4Embedding::from_data(&int4_groups(&w, v, d).map_err(anyhow::Error::msg)?, v, d)
            .map_err(anyhow::Error::msg)?,
    );
    let f16e = Embedding::F16(w.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect());
    let f32e = Embedding::F32(w);
    let h: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut logits = vec![0.0f32; v];
    // Every storage on every head path this CPU runs (the default is the last one).
    for (name, e) in [("f32", &f32e), ("f16", &f16e), ("int8", &int8), ("int4", &int4)] {
        for path in HeadPath::available() {
            let n = if path == HeadPath::Portable { 20 } else { 200 };
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..n {
                    e.head(&h, d, &mut logits, path);
                    std::hint::black_box(&logits);
                }
                best = best.min(t.elapsed().as_secs_f64() / n as f64);
            }
            println!("head {name:5} {:<8} V={v} d={d}: {:.1} µs", path.name(), best * 1e6);
        }
    }
    let Embedding::Int4(e4) = &int4 else { unreachable!() };
    for variant in Variant::available() {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let n = if variant == Variant::Scalar { 5 } else { 200 };
            let t = Instant::now();
            for _ in 0..n {
                e4.logits_with(&h, &mut logits, variant);
                std::hint::black_box(&logits);
            }
            best = best.min(t.elapsed().as_secs_f64() / n as f64);
        }
        println!("head int4 {variant:?} V={v} d={d}: {:.1} µs", best * 1e6);
    }
    Ok(())
}
