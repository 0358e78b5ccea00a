//! OpenBLAS's `cblas_sgemm`, opened at run time from the system's `libopenblas.so.0` (Debian
//! and Ubuntu: package libopenblas0), never linked: a build without it is the same build.
//! Used single-threaded, one call per data-parallel group; calls it cannot express (a
//! multi-threaded call, strides with no unit step, sizes past i32) go to the `gemm` crate.

use std::ffi::{CStr, c_char, c_int};
use std::sync::OnceLock;

use gemm::Parallelism;

use super::GemmF32;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

type Sgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

/// The opened library.
pub struct OpenBlas {
    /// Kept open for the process's life (the function pointers point into it).
    _lib: libloading::Library,
    sgemm: Sgemm,
    /// The kernel family OpenBLAS picked for this CPU (`openblas_get_corename`).
    pub core: String,
    /// `openblas_get_config`'s first word (the version).
    pub version: String,
}

static LIB: OnceLock<Result<OpenBlas, String>> = OnceLock::new();
static FALLBACK: OnceLock<GemmF32> = OnceLock::new();

/// Open `libopenblas.so.0` (once) and set it to one thread per call.
pub fn load() -> Result<&'static OpenBlas, String> {
    LIB.get_or_init(|| {
        // SAFETY: loading OpenBLAS runs its initialisers, which only read the CPU and the
        // environment; the symbols are read with the types of OpenBLAS's cblas.h.
        unsafe {
            let lib = libloading::Library::new("libopenblas.so.0")
                .map_err(|e| format!("libopenblas.so.0 could not be opened ({e})"))?;
            let sgemm: Sgemm =
                *lib.get::<Sgemm>(b"cblas_sgemm\0").map_err(|e| format!("no cblas_sgemm ({e})"))?;
            let threads = lib
                .get::<unsafe extern "C" fn(c_int)>(b"openblas_set_num_threads\0")
                .map_err(|e| format!("no openblas_set_num_threads ({e})"))?;
            threads(1);
            let text = |name: &[u8]| -> String {
                lib.get::<unsafe extern "C" fn() -> *const c_char>(name)
                    .ok()
                    .map(|f| f())
                    .filter(|p| !p.is_null())
                    .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
                    .unwrap_or_else(|| "?".into())
            };
            let core = text(b"openblas_get_corename\0");
            let version =
                text(b"openblas_get_config\0").split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Ok(OpenBlas { _lib: lib, sgemm, core, version })
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// OpenBLAS kernel families built for AVX2 + FMA (no AVX-512).
pub fn is_avx2_core(core: &str) -> bool {
    let c = core.to_ascii_lowercase();
    c.contains("haswell") || c.contains("zen")
}

/// The GEMM [`gemm`] hands the calls OpenBLAS cannot take.
pub fn set_fallback(f: GemmF32) {
    let _ = FALLBACK.set(f);
}

/// One operand of a row-major CBLAS call: (transpose flag, leading dimension) for a rows x cols
/// matrix with strides (rs, cs), if CBLAS can read it in place.
pub fn operand(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(c_int, c_int)> {
    let ld =
        |v: isize, min: usize| (v > 0 && v as usize >= min.max(1)).then(|| c_int::try_from(v).ok()).flatten();
    if cs == 1
        && let Some(ld) = ld(rs, cols)
    {
        return Some((NO_TRANS, ld));
    }
    if rs == 1
        && let Some(ld) = ld(cs, rows)
    {
        return Some((TRANS, ld));
    }
    None
}

/// The `gemm` crate's entry-point signature over `cblas_sgemm`: dst = alpha · dst (when
/// `read_dst`) + beta · lhs · rhs.
///
/// # Safety
/// As `gemm::gemm`: the pointers and strides describe valid m x n, m x k and k x n matrices,
/// dst not overlapping the others.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    conj_dst: bool,
    conj_lhs: bool,
    conj_rhs: bool,
    parallelism: Parallelism,
) {
    let lib = LIB.get().and_then(|r| r.as_ref().ok());
    let dims = (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k));
    let single = !matches!(parallelism, Parallelism::Rayon(t) if t > 1);
    let call = match (lib, dims) {
        (Some(lib), (Ok(mi), Ok(ni), Ok(ki))) if single && m > 0 && n > 0 && k > 0 => {
            match (
                operand(m, n, dst_rs, dst_cs),
                operand(m, k, lhs_rs, lhs_cs),
                operand(k, n, rhs_rs, rhs_cs),
            ) {
                (Some((NO_TRANS, ldc)), Some((ta, lda)), Some((tb, ldb))) => {
                    Some((lib, mi, ni, ki, ta, lda, tb, ldb, ldc))
                }
                _ => None,
            }
        }
        _ => None,
    };
    match call {
        Some((lib, mi, ni, ki, ta, lda, tb, ldb, ldc)) => {
            // SAFETY: the caller's contract; operand() checked that each leading dimension
            // covers its matrix's row (or column) length, so CBLAS reads what gemm would.
            unsafe {
                (lib.sgemm)(
                    ROW_MAJOR,
                    ta,
                    tb,
                    mi,
                    ni,
                    ki,
                    beta,
                    lhs,
                    lda,
                    rhs,
                    ldb,
                    if read_dst { alpha } else { 0.0 },
                    dst,
                    ldc,
                )
            }
        }
        None => {
            let f = *FALLBACK.get().unwrap_or(&(gemm::gemm::<f32> as GemmF32));
            // SAFETY: the caller's contract, passed on unchanged.
            unsafe {
                f(
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    alpha,
                    beta,
                    conj_dst,
                    conj_lhs,
                    conj_rhs,
                    parallelism,
                )
            }
        }
    }
}
