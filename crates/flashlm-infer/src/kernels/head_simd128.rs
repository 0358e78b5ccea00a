//! The int4 output head in WebAssembly SIMD128 ([`super::head::HeadPath::Simd128`], a build
//! with `+simd128`): the same integer sums and float steps as
//! [`super::head4::logits_scalar`], bit for bit, in the blocked layout of
//! [`Int4Embedding::blocked`]. Per chunk of 8 columns and 4 rows one 16-byte load is read as
//! eight 16-bit lanes (two per row, four nibbles each); three ANDs and a shift take the four
//! nibbles apart, each left where it is in its lane (the second times 16, the third times
//! 256), and `i32x4.dot_i16x8_s` (`pmaddwd` on x86) multiplies them by the matching
//! activations and adds a row's two lanes. The activations are stored pre-scaled so that
//! every product is 256 times the true one (nibble 0 and 3 meet 256·x, nibble 1 (times 16)
//! meets 16·x, nibble 2 (times 256) meets x; |256·x| <= 32,512 fits an i16), so one 32-bit
//! sum per row takes all four nibbles and one exact shift right by 8 per group undoes the
//! scale (|sum| <= 256 · 32 · 15 · 127 < 2^31). No widening and no shuffles, and few enough
//! live vectors for V8's 16 x86 registers. (16-bit sums with `i16x8.extmul`, the NEON head's
//! design, ran at 2,650 tok/s in Node; widening the bytes before `dot` at 2,250; three sums
//! per row instead of one, about 3,800.)

use std::arch::wasm32::*;

use super::head4::{Int4Embedding, QuantizedVector};
use crate::format::INT4_GROUP;

const ROWS: usize = super::head4::ROWS;
const CHUNK: usize = 64;
const CHUNKS: usize = INT4_GROUP / 8;

/// A v128 from 16 bytes.
#[inline]
fn load16(b: &[u8]) -> v128 {
    assert!(b.len() >= 16);
    // SAFETY: b holds at least 16 bytes; v128_load has no alignment requirement.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

/// 16 f16 scales (finite, non-negative: checked at load) as four f32 vectors, rebiased by an
/// exact multiply by 2^112 as [`super::head::f16_to_f32`] does for finite values.
#[inline]
fn scales16(s: &[u16]) -> [v128; 4] {
    assert!(s.len() >= ROWS);
    // SAFETY: s holds at least 16 u16 (32 bytes); v128_load has no alignment requirement.
    let v = unsafe { [v128_load(s.as_ptr() as *const v128), v128_load(s.as_ptr().add(8) as *const v128)] };
    let k = f32x4_splat(f32::from_bits(0x7780_0000));
    let f = |w: v128| f32x4_mul(i32x4_shl(w, 13), k);
    [
        f(u32x4_extend_low_u16x8(v[0])),
        f(u32x4_extend_high_u16x8(v[0])),
        f(u32x4_extend_low_u16x8(v[1])),
        f(u32x4_extend_high_u16x8(v[1])),
    ]
}

/// logits = E · h for an int4 embedding, equal to [`super::head4::logits_scalar`] bit for bit.
pub fn int4_logits(e: &Int4Embedding, x: &QuantizedVector, logits: &mut [f32]) {
    let (groups, per_block) = e.blocked_shape(x, logits);
    // Per group, chunk and nibble k of a 16-bit lane: the column that nibble holds in the
    // lane's two rows pairs (lane 2r + p holds bytes 2p, 2p + 1 of row r: nibble 0 = column
    // 2p, 1 = 4 + 2p, 2 = 2p + 1, 3 = 5 + 2p of the chunk), as i16 times SCALE[k] for both
    // values of p (the nibble's place in its lane times SCALE[k] is 256).
    const COLS: [[usize; 2]; 4] = [[0, 2], [4, 6], [1, 3], [5, 7]];
    const SCALE: [i16; 4] = [256, 16, 1, 256];
    let xv: Vec<[[v128; 4]; CHUNKS]> =
        x.q.chunks_exact(INT4_GROUP)
            .map(|q| {
                std::array::from_fn(|ch| {
                    std::array::from_fn(|k| {
                        let [a, b] = COLS[k].map(|c| i16::from(q[8 * ch + c]) * SCALE[k]);
                        i16x8(a, b, a, b, a, b, a, b)
                    })
                })
            })
            .collect();
    // (Through black_box: V8 otherwise rebuilds each mask from an immediate in every chunk.)
    let m = std::hint::black_box([u16x8_splat(0x000F), u16x8_splat(0x00F0), u16x8_splat(0x0F00)]);
    // The chunk loop stays a loop (a trip count the compiler cannot see): unrolled, its
    // sixteen activation loads are all hoisted to the top and V8's register allocator spills
    // most of them (about 130 stack moves per group against 200 arithmetic instructions).
    let chunks = std::hint::black_box(CHUNKS);
    let blocks = e.blocked.chunks_exact(per_block).zip(e.blocked_scales.chunks_exact(groups * ROWS));
    for ((block, scales), dst) in blocks.zip(logits.chunks_mut(ROWS)) {
        let mut acc = [f32x4_splat(0.0); 4];
        for (g, (xg, wg)) in xv.iter().zip(block.chunks_exact(CHUNKS * CHUNK)).enumerate() {
            // One 32-bit sum per row (rows 4j..4j + 4): 256 times the row's integer sum.
            let mut s32 = [i32x4_splat(0); 4];
            for (xc, wc) in xg.iter().zip(wg.chunks_exact(CHUNK)).take(chunks) {
                for (s, w4) in s32.iter_mut().zip(wc.chunks_exact(16)) {
                    let v = load16(w4);
                    let lo = i32x4_add(
                        i32x4_dot_i16x8(v128_and(v, m[0]), xc[0]),
                        i32x4_dot_i16x8(v128_and(v, m[1]), xc[1]),
                    );
                    let hi = i32x4_add(
                        i32x4_dot_i16x8(v128_and(v, m[2]), xc[2]),
                        i32x4_dot_i16x8(u16x8_shr(v, 12), xc[3]),
                    );
                    *s = i32x4_add(*s, i32x4_add(lo, hi));
                }
            }
            let off = i32x4_splat(x.offset[g]);
            let ws = scales16(&scales[g * ROWS..]);
            let xs = f32x4_splat(x.scale[g]);
            for (j, a) in acc.iter_mut().enumerate() {
                let isum = i32x4_sub(i32x4_shr(s32[j], 8), off);
                // As the reference: isum · (scale · xs), then added (no fused multiply-add).
                *a = f32x4_add(*a, f32x4_mul(f32x4_convert_i32x4(isum), f32x4_mul(ws[j], xs)));
            }
        }
        let mut lanes = [0.0f32; ROWS];
        for (l, a) in lanes.chunks_exact_mut(4).zip(acc) {
            l.copy_from_slice(&[
                f32x4_extract_lane::<0>(a),
                f32x4_extract_lane::<1>(a),
                f32x4_extract_lane::<2>(a),
                f32x4_extract_lane::<3>(a),
            ]);
        }
        let n = dst.len();
        dst.copy_from_slice(&lanes[..n]);
    }
}
