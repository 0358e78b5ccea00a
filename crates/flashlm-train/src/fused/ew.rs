//! Element-wise kernels of the fused step, each compiled for AVX-512, AVX2 and portable code
//! (`flashlm_core::multiversion!`); the layer functions split rows across threads. The ones the
//! engine also needs (SiLU-gate, add) are `flashlm_core::vmath`'s.
#![allow(clippy::too_many_arguments)]

use flashlm_core::vmath::sigmoid;

flashlm_core::multiversion! {
    /// dg = da · u · silu'(g), du = da · silu(g).
    fn silu_bwd(dg: &mut [f32], du: &mut [f32], da: &[f32], g: &[f32], u: &[f32]) {
        for ((((dg, du), &da), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(da).zip(g).zip(u) {
            let sg = sigmoid(g);
            *du = da * g * sg;
            *dg = da * u * sg * (1.0 + g * (1.0 - sg));
        }
    }
}

flashlm_core::multiversion! {
    /// One AdamW update; k = [decay, β₁, β₂, lr / bias₁, sqrt(bias₂), ε]. Clears the
    /// gradient as it reads it (saves the next step a separate pass).
    fn adamw(w: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32], k: [f32; 6]) {
        let [decay, b1, b2, step_size, bc2_sqrt, eps] = k;
        for (((w, g), m), v) in w.iter_mut().zip(g.iter_mut()).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = std::mem::take(g);
            *w *= decay;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *w -= step_size * *m / denom;
        }
    }
}

flashlm_core::multiversion! {
    /// RMSNorm of rows of width d: y = x · r · g, r[row] = 1 / sqrt(mean(x²) + eps).
    fn rms_fwd(y: &mut [f32], r: &mut [f32], x: &[f32], g: &[f32], d: usize, eps: f32) {
        for ((y, r), x) in y.chunks_exact_mut(d).zip(r.iter_mut()).zip(x.chunks_exact(d)) {
            let mut acc = [0.0f32; 16];
            let mut ch = x.chunks_exact(16);
            for c in &mut ch {
                for j in 0..16 {
                    acc[j] += c[j] * c[j];
                }
            }
            let mut ss = 0.0f32;
            for v in ch.remainder() {
                ss += v * v;
            }
            for a in acc {
                ss += a;
            }
            let rr = 1.0 / (ss / d as f32 + eps).sqrt();
            *r = rr;
            for ((o, &v), &s) in y.iter_mut().zip(x).zip(g) {
                *o = v * rr * s;
            }
        }
    }
}

flashlm_core::multiversion! {
    /// Backward of `rms_fwd` for rows of width d: dx += r·g·dy − x·r³·mean(x·g·dy);
    /// dg += Σ_rows dy·x·r.
    fn rms_bwd(dx: &mut [f32], dg: &mut [f32], dy: &[f32], x: &[f32], r: &[f32], g: &[f32], d: usize) {
        for (((dx, dy), x), &r) in dx.chunks_exact_mut(d).zip(dy.chunks_exact(d)).zip(x.chunks_exact(d)).zip(r) {
            let mut acc = [0.0f32; 16];
            let (mut a16, mut b16, mut c16) = (dy.chunks_exact(16), x.chunks_exact(16), g.chunks_exact(16));
            for ((a, b), c) in (&mut a16).zip(&mut b16).zip(&mut c16) {
                for j in 0..16 {
                    acc[j] += a[j] * b[j] * c[j];
                }
            }
            let mut dot = 0.0f32;
            for ((a, b), c) in a16.remainder().iter().zip(b16.remainder()).zip(c16.remainder()) {
                dot += a * b * c;
            }
            for a in acc {
                dot += a;
            }
            let dot = dot / d as f32;
            let r3 = r * r * r;
            for ((((o, &dy), &x), &g), dg) in dx.iter_mut().zip(dy).zip(x).zip(g).zip(dg.iter_mut()) {
                *o += r * g * dy - x * r3 * dot;
                *dg += dy * x * r;
            }
        }
    }
}

flashlm_core::multiversion! {
    /// One sequence of T positions: c = causal depthwise conv of the value half of gv
    /// ([T, 2d], taps [k, d]), m = c · sigmoid(gate half).
    fn conv_fwd(c: &mut [f32], m: &mut [f32], gv: &[f32], taps: &[f32], d: usize, k: usize) {
        let t = c.len() / d;
        for ti in 0..t {
            let out = &mut c[ti * d..(ti + 1) * d];
            out.fill(0.0);
            for j in 0..k {
                // tap j reads the value k-1-j steps back
                let Some(src) = (ti + j).checked_sub(k - 1) else { continue };
                let val = &gv[src * 2 * d + d..(src + 1) * 2 * d];
                for ((o, &w), &x) in out.iter_mut().zip(&taps[j * d..(j + 1) * d]).zip(val) {
                    *o += w * x;
                }
            }
            let gate = &gv[ti * 2 * d..ti * 2 * d + d];
            for ((mo, &co), &g) in m[ti * d..(ti + 1) * d].iter_mut().zip(&*out).zip(gate) {
                *mo = co * sigmoid(g);
            }
        }
    }
}

flashlm_core::multiversion! {
    /// Backward of `conv_fwd` for one sequence: writes the gate half of dgv, adds into its
    /// value half, and adds the tap gradients into dtaps ([k, d]); dc is [d] scratch.
    fn conv_bwd(dgv: &mut [f32], dtaps: &mut [f32], dc: &mut [f32], dm: &[f32], c: &[f32], gv: &[f32], taps: &[f32], d: usize, k: usize) {
        let t = dm.len() / d;
        for ti in 0..t {
            let gate = &gv[ti * 2 * d..ti * 2 * d + d];
            let (dmr, cr) = (&dm[ti * d..(ti + 1) * d], &c[ti * d..(ti + 1) * d]);
            let dgate = &mut dgv[ti * 2 * d..ti * 2 * d + d];
            for ((((dg, dcv), &g), &dmv), &cv) in dgate.iter_mut().zip(dc.iter_mut()).zip(gate).zip(dmr).zip(cr) {
                let sg = sigmoid(g);
                *dg = dmv * cv * sg * (1.0 - sg);
                *dcv = dmv * sg;
            }
            for j in 0..k {
                let Some(src) = (ti + j).checked_sub(k - 1) else { continue };
                let tap = &taps[j * d..(j + 1) * d];
                let dval = &mut dgv[src * 2 * d + d..(src + 1) * 2 * d];
                for ((o, &w), &g) in dval.iter_mut().zip(tap).zip(&*dc) {
                    *o += w * g;
                }
                let val = &gv[src * 2 * d + d..(src + 1) * 2 * d];
                for ((o, &g), &x) in dtaps[j * d..(j + 1) * d].iter_mut().zip(&*dc).zip(val) {
                    *o += g * x;
                }
            }
        }
    }
}
