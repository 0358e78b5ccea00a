//! The output head on aarch64 NEON ([`super::head::HeadPath::Neon`]). The head is the one
//! float layer and may multiply:
//! * [`int4_logits`]: the int4 head of [`super::head4`] (the bundled model's), the same
//!   integer sums and float steps as [`super::head4::logits_scalar`], bit for bit. Per
//!   chunk of 8 columns and 4 rows one 16-byte load, an AND and a shift split the nibbles,
//!   and `smlal` / `smlal2` multiply-accumulate them with the broadcast activations into
//!   16-bit sums (at most 8 products of 15 · 127 per lane and group: 15,240, no overflow);
//!   per group `saddlp` and `addp` fold them into one 32-bit sum per row. Baseline NEON
//!   only (no `dotprod`), so it runs on every aarch64 CPU (Cortex-A53 and A72 included).
//! * [`f32_rows`]: f32 rows with fused multiply-adds (`fmla`), four accumulators.

use std::arch::aarch64::*;

use super::head4::{Int4Embedding, QuantizedVector};
use crate::format::INT4_GROUP;

/// Rows per block of the int4 kernel's layout ([`Int4Embedding::blocked`]).
const ROWS: usize = super::head4::ROWS;
/// Bytes of one chunk (16 rows × 8 columns of nibbles) and chunks per group.
const CHUNK: usize = 64;
const CHUNKS: usize = INT4_GROUP / 8;

/// 16 f16 scales (finite, non-negative: checked when the embedding was loaded) as four
/// vectors of f32: the exponent is rebiased by an exact multiply by 2^112, as
/// [`super::head::f16_to_f32`] does for finite values.
#[inline]
#[target_feature(enable = "neon")]
fn scales16(s: &[u16]) -> [float32x4_t; 4] {
    assert!(s.len() >= ROWS);
    // SAFETY: s holds 16 u16 (two 16-byte loads).
    let (a, b) = unsafe { (vld1q_u16(s.as_ptr()), vld1q_u16(s.as_ptr().add(8))) };
    let k = vdupq_n_f32(f32::from_bits(0x7780_0000));
    let f = |v: uint32x4_t| vmulq_f32(vreinterpretq_f32_u32(vshlq_n_u32::<13>(v)), k);
    [f(vmovl_u16(vget_low_u16(a))), f(vmovl_high_u16(a)), f(vmovl_u16(vget_low_u16(b))), f(vmovl_high_u16(b))]
}

/// logits = E · h for an int4 embedding, equal to [`super::head4::logits_scalar`] bit for bit.
#[target_feature(enable = "neon")]
pub fn int4_logits(e: &Int4Embedding, x: &QuantizedVector, logits: &mut [f32]) {
    let (groups, per_block) = e.blocked_shape(x, logits);
    // Per group and chunk: columns 0..4 and 4..8 of the chunk, each broadcast to 4 rows.
    let xv: Vec<[int8x16_t; 2 * CHUNKS]> =
        x.q.chunks_exact(INT4_GROUP)
            .map(|q| {
                std::array::from_fn(|k| {
                    let c = &q[4 * k..4 * k + 4];
                    vreinterpretq_s8_u32(vdupq_n_u32(u32::from_le_bytes([
                        c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8,
                    ])))
                })
            })
            .collect();
    let low = vdupq_n_u8(0x0F);
    let blocks = e.blocked.chunks_exact(per_block).zip(e.blocked_scales.chunks_exact(groups * ROWS));
    for ((block, scales), dst) in blocks.zip(logits.chunks_mut(ROWS)) {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for (g, (xg, wg)) in xv.iter().zip(block.chunks_exact(CHUNKS * CHUNK)).enumerate() {
            // [rows 4j, 4j+1] and [rows 4j+2, 4j+3], four columns each.
            let mut s16 = [vdupq_n_s16(0); 8];
            for (ch, wc) in wg.chunks_exact(CHUNK).enumerate() {
                let (xl, xh) = (xg[2 * ch], xg[2 * ch + 1]);
                for (j, w4) in wc.chunks_exact(16).enumerate() {
                    // SAFETY: w4 holds 16 bytes.
                    let v = unsafe { vld1q_u8(w4.as_ptr()) };
                    let lo = vreinterpretq_s8_u8(vandq_u8(v, low));
                    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                    let a = &mut s16[2 * j];
                    *a = vmlal_s8(*a, vget_low_s8(lo), vget_low_s8(xl));
                    *a = vmlal_s8(*a, vget_low_s8(hi), vget_low_s8(xh));
                    let a = &mut s16[2 * j + 1];
                    *a = vmlal_high_s8(*a, lo, xl);
                    *a = vmlal_high_s8(*a, hi, xh);
                }
            }
            let off = vdupq_n_s32(x.offset[g]);
            let ws = scales16(&scales[g * ROWS..]);
            let xs = vdupq_n_f32(x.scale[g]);
            for (j, a) in acc.iter_mut().enumerate() {
                let isum = vsubq_s32(vpaddq_s32(vpaddlq_s16(s16[2 * j]), vpaddlq_s16(s16[2 * j + 1])), off);
                // As the reference: isum · (scale · xs), then added (no fused multiply-add).
                *a = vaddq_f32(*a, vmulq_f32(vcvtq_f32_s32(isum), vmulq_f32(ws[j], xs)));
            }
        }
        let mut lanes = [0.0f32; ROWS];
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: lanes holds 16 f32; 4j + 4 <= 16.
            unsafe { vst1q_f32(lanes.as_mut_ptr().add(4 * j), *a) };
        }
        let n = dst.len();
        dst.copy_from_slice(&lanes[..n]);
    }
}

/// logits[r] = row r · h for f32 rows of `d` values (fused multiply-adds).
#[target_feature(enable = "neon")]
pub fn f32_rows(w: &[f32], h: &[f32], d: usize, logits: &mut [f32]) {
    let h = &h[..d];
    for (l, row) in logits.iter_mut().zip(w.chunks_exact(d)) {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut rc = row.chunks_exact(16);
        let mut hc = h.chunks_exact(16);
        for (r, x) in (&mut rc).zip(&mut hc) {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: r and x hold 16 f32; 4j + 4 <= 16.
                *a = unsafe {
                    vfmaq_f32(*a, vld1q_f32(r.as_ptr().add(4 * j)), vld1q_f32(x.as_ptr().add(4 * j)))
                };
            }
        }
        let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
        for (&a, &b) in rc.remainder().iter().zip(hc.remainder()) {
            s += a * b;
        }
        *l = s;
    }
}
