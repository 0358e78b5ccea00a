//! CPU features as the dispatch sees them: what the CPU has, capped by `FLASHLM_ISA`.
//!
//! Every choice of a kernel, head path or element-wise variant asks these functions, so
//! `FLASHLM_ISA=avx2` makes an AVX-512 machine run exactly what an AVX2-only CPU would
//! (and `FLASHLM_ISA=portable` what a CPU without either runs). The cap can only take
//! features away; the unsafe calls still check the real CPU before they run.

use std::sync::OnceLock;

/// Instruction-set levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// No x86 SIMD beyond the target's baseline.
    Portable,
    /// AVX2, FMA, F16C.
    Avx2,
    /// AVX-512 (F, BW, VNNI where present): no cap.
    Avx512,
}

impl Isa {
    /// Parse a `FLASHLM_ISA` value.
    pub fn from_name(s: &str) -> Option<Isa> {
        match s.to_ascii_lowercase().as_str() {
            "portable" | "none" | "scalar" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx-512" | "native" | "" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The highest level dispatch may use (read once from `FLASHLM_ISA`; an unknown value is
/// reported on stderr and ignored).
pub fn cap() -> Isa {
    static CAP: OnceLock<Isa> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var("FLASHLM_ISA") {
        Err(_) => Isa::Avx512,
        Ok(v) => Isa::from_name(&v).unwrap_or_else(|| {
            eprintln!("warning: FLASHLM_ISA={v:?} is not portable, avx2 or avx512; ignored");
            Isa::Avx512
        }),
    })
}

macro_rules! feature {
    ($(#[$doc:meta])* $name:ident, $feat:tt, $level:expr) => {
        $(#[$doc])*
        pub fn $name() -> bool {
            #[cfg(target_arch = "x86_64")]
            {
                cap() >= $level && std::arch::is_x86_feature_detected!($feat)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        }
    };
}

feature!(/// AVX2, unless capped.
    avx2, "avx2", Isa::Avx2);
feature!(/// FMA, unless capped.
    fma, "fma", Isa::Avx2);
feature!(/// F16C, unless capped.
    f16c, "f16c", Isa::Avx2);
feature!(/// AVX-512F, unless capped.
    avx512f, "avx512f", Isa::Avx512);
feature!(/// AVX-512BW, unless capped.
    avx512bw, "avx512bw", Isa::Avx512);
feature!(/// AVX-512 VNNI, unless capped.
    avx512vnni, "avx512vnni", Isa::Avx512);

/// NEON, part of every aarch64 CPU, unless `FLASHLM_ISA=portable` caps it (false elsewhere).
pub fn neon() -> bool {
    cfg!(target_arch = "aarch64") && cap() > Isa::Portable
}

/// WebAssembly SIMD128, on in a wasm32 build with `+simd128` (WebAssembly has no run-time
/// detection), unless `FLASHLM_ISA=portable` caps it (false elsewhere).
pub fn simd128() -> bool {
    cfg!(all(target_arch = "wasm32", target_feature = "simd128")) && cap() > Isa::Portable
}

/// The level dispatch runs at: AVX-512 where AVX-512F is there (and not capped), AVX2 where
/// AVX2 and FMA are, portable code otherwise. The one rule every multi-level choice follows
/// (`vmath`'s element-wise kernels, the training GEMMs and products).
pub fn level() -> Isa {
    if avx512f() {
        Isa::Avx512
    } else if avx2() && fma() {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

/// One line for benchmark output: the CPU's model name (Linux) and the features dispatch
/// uses here.
pub fn describe() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .and_then(|l| l.split_once(':').map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let flags: Vec<&str> = [
        ("avx2", avx2()),
        ("fma", fma()),
        ("f16c", f16c()),
        ("avx512f", avx512f()),
        ("avx512bw", avx512bw()),
        ("avx512vnni", avx512vnni()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    format!("{model}; dispatch uses: {} (FLASHLM_ISA cap: {:?})", flags.join(" "), cap())
}
