//! `flashlm._flashlm`: the Python extension module. Thin wrappers over `flashlm_infer`'s
//! library API (`Model::load`, `generate::Generation`, `eval::score_stories`); generation
//! and evaluation run with the GIL released, in slices, with Ctrl-C checked between them.
//! `python/flashlm/__init__.py` adds the numpy view of `logits`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashlm_infer::eval::{Protocol, check_finite, score_stories, select, sum_scores};
use flashlm_infer::format::EmbeddingDtype;
use flashlm_infer::generate::{GenerateError, GenerateParams, Generation};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model as Engine;
use flashlm_infer::sample::{Penalties, Sampler};
use flashlm_infer::tokenizer::Tokenizer as Vocab;
use pyo3::exceptions::{PyMemoryError, PyOSError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn generate_error(e: GenerateError) -> PyErr {
    value_error(e)
}

/// An error from opening a file: OSError when the file cannot be read, ValueError when it is
/// read but invalid.
fn file_error(path: &std::path::Path, e: &anyhow::Error) -> PyErr {
    let msg = format!("{e:#}");
    if std::fs::metadata(path).is_err() || e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some()) {
        PyOSError::new_err(msg)
    } else {
        PyValueError::new_err(msg)
    }
}

/// A count or id given as a Python int: a negative one (or one past 64 bits) is a ValueError
/// naming the argument, not an OverflowError.
fn count(name: &str, v: i128) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| value_error(format!("{name} must be a non-negative integer, not {v}")))
}

/// A FlashLM model: a `.flm` file, or the bundled small model when `path` is None.
#[pyclass(module = "flashlm._flashlm", frozen)]
struct Model {
    engine: Arc<Engine>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path=None, kernel="auto", threads=1))]
    fn new(path: Option<PathBuf>, kernel: &str, threads: i128) -> PyResult<Self> {
        let threads = count("threads", threads)?;
        let kernel = Kernel::from_name(kernel).map_err(value_error)?;
        flashlm_core::limits::check_threads(threads).map_err(value_error)?;
        let mut engine = Engine::load(path.as_deref(), kernel).map_err(|e| match &path {
            Some(p) => file_error(p, &e),
            None => value_error(format!("{e:#}")),
        })?;
        engine.set_threads(threads).map_err(value_error)?;
        Ok(Self { engine: Arc::new(engine) })
    }

    /// Pack an original PyTorch FlashLM v4 checkpoint (`.pt`/`.pth` or `.safetensors`) with
    /// its `tokenizer.json` in memory, through the same code as `flashlm-export --torch`.
    #[staticmethod]
    #[pyo3(signature = (checkpoint, tokenizer, seq_len=256, embedding="f32", kernel="auto", threads=1))]
    fn from_torch(
        py: Python<'_>,
        checkpoint: PathBuf,
        tokenizer: PathBuf,
        seq_len: i128,
        embedding: &str,
        kernel: &str,
        threads: i128,
    ) -> PyResult<Self> {
        let (seq_len, threads) = (count("seq_len", seq_len)?, count("threads", threads)?);
        let kernel = Kernel::from_name(kernel).map_err(value_error)?;
        let emb = match embedding {
            "f32" => EmbeddingDtype::F32,
            "f16" => EmbeddingDtype::F16,
            "int8" => EmbeddingDtype::Int8,
            "int4" => EmbeddingDtype::Int4,
            e => return Err(value_error(format!("embedding must be f32, f16, int8 or int4, not {e:?}"))),
        };
        flashlm_core::limits::check_threads(threads).map_err(value_error)?;
        let c = py.detach(|| flashlm_convert::from_torch(&checkpoint, &tokenizer, seq_len, emb)).map_err(
            |e| {
                if std::fs::metadata(&tokenizer).is_err() {
                    file_error(&tokenizer, &e)
                } else {
                    file_error(&checkpoint, &e)
                }
            },
        )?;
        let mut engine = Engine::from_bytes(&c.bytes, kernel).map_err(value_error)?;
        engine.set_threads(threads).map_err(value_error)?;
        Ok(Self { engine: Arc::new(engine) })
    }

    /// A stream of text pieces after `prompt` (`flashlm.Model.generate` reads it to the end
    /// with `read_all`).
    #[pyo3(signature = (prompt, max_tokens=200, temperature=0.8, top_k=50, top_p=1.0, seed=None, stop=None, ignore_eos=false,
                        min_p=0.0, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, logit_bias=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        prompt: &str,
        max_tokens: i128,
        temperature: f32,
        top_k: i128,
        top_p: f32,
        seed: Option<i128>,
        stop: Option<Vec<String>>,
        ignore_eos: bool,
        min_p: f32,
        presence_penalty: f32,
        frequency_penalty: f32,
        repetition_penalty: f32,
        logit_bias: Option<std::collections::BTreeMap<i64, f32>>,
    ) -> PyResult<TextStream> {
        let (max_tokens, top_k) = (count("max_tokens", max_tokens)?, count("top_k", top_k)?);
        let seed = seed
            .map(|x| {
                u64::try_from(x)
                    .map_err(|_| value_error(format!("seed must be an integer 0..2**64, not {x}")))
            })
            .transpose()?;
        // Ids as u16 here; against the vocabulary (and the biases) in Generation::new.
        let logit_bias = logit_bias
            .unwrap_or_default()
            .into_iter()
            .map(|(t, b)| {
                u16::try_from(t)
                    .map(|id| (id, b))
                    .map_err(|_| value_error(format!("logit_bias: token {t} is not in the vocabulary")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let p = GenerateParams {
            max_tokens,
            sampler: Sampler { temperature, top_k, top_p, min_p },
            seed: seed.unwrap_or(42),
            stop: stop.unwrap_or_default(),
            ignore_eos,
            penalties: Penalties {
                presence: presence_penalty,
                frequency: frequency_penalty,
                repetition: repetition_penalty,
                ..Penalties::default()
            },
            logit_bias,
            logprobs: None,
        };
        let g = Generation::new(&self.engine, prompt, p).map_err(generate_error)?;
        Ok(TextStream { engine: self.engine.clone(), generation: g, done: false })
    }

    /// Next-token logits for every position of `token_ids`, as little-endian f32 bytes
    /// ([len, vocab]); `flashlm.Model.logits` wraps them in a numpy array.
    fn _logits_bytes<'py>(&self, py: Python<'py>, token_ids: Vec<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let v = self.engine.config.vocab_size;
        if token_ids.is_empty() {
            return Err(value_error("token_ids is empty"));
        }
        if let Some(bad) = token_ids.iter().find(|&&t| t < 0 || t as usize >= v) {
            return Err(value_error(format!("token id {bad} is outside the vocabulary (0..{v})")));
        }
        // The size is known before anything is allocated: [len, vocab] f32 here, then once
        // more as the bytes object Python gets.
        let n =
            token_ids.len().checked_mul(v).filter(|&n| n <= isize::MAX as usize / 4).ok_or_else(|| {
                value_error(format!("{} tokens x {v} logits do not fit in memory", token_ids.len()))
            })?;
        let too_big = || {
            PyMemoryError::new_err(format!(
                "the logits of {} tokens take {:.2} GB ({} x {v} x 4 bytes, twice while copied out): \
                 score fewer tokens at a time",
                token_ids.len(),
                (n * 4) as f64 / 1e9,
                token_ids.len()
            ))
        };
        let mut out: Vec<f32> = Vec::new();
        out.try_reserve_exact(n).map_err(|_| too_big())?;
        out.resize(n, 0.0);
        let ids: Vec<u16> = token_ids.iter().map(|&t| t as u16).collect();
        let engine = &self.engine;
        py.detach(|| {
            // In windows of 256 tokens on one state: the same logits as one call, with the
            // engine's working memory bounded by the window, not the whole input.
            let mut s = engine.new_state();
            for (xs, l) in ids.chunks(256).zip(out.chunks_mut(256 * v)) {
                engine.forward_batch(&mut s, xs, Some(l));
            }
        });
        // Python raises MemoryError itself if it cannot allocate the bytes object.
        PyBytes::new_with(py, n * 4, |buf| {
            for (dst, x) in buf.chunks_exact_mut(4).zip(&out) {
                dst.copy_from_slice(&x.to_le_bytes());
            }
            Ok(())
        })
    }

    /// Validation bits per character of a story file: a dict with bpc, loss, ppl, stories,
    /// tokens, chars, cut; with `protocol="both"`, {"original": dict, "exact": dict}.
    #[pyo3(signature = (path, protocol="original", stories=500, threads=1))]
    fn eval_bpc<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        protocol: &str,
        stories: i128,
        threads: i128,
    ) -> PyResult<Bound<'py, PyDict>> {
        let protocols: &[Protocol] = match protocol {
            "original" => &[Protocol::Original],
            "exact" => &[Protocol::Exact],
            "both" => &[Protocol::Original, Protocol::Exact],
            p => {
                return Err(value_error(format!(
                    "protocol must be \"original\", \"exact\" or \"both\", not {p:?}"
                )));
            }
        };
        let (stories, threads) = (count("stories", stories)?, count("threads", threads)?);
        flashlm_core::limits::check_threads(threads).map_err(value_error)?;
        if stories == 0 {
            return Err(value_error("the number of stories must be at least 1"));
        }
        let engine = &self.engine;
        let all = py
            .detach(|| flashlm_infer::tokenizer::stories::read_story_file(&path))
            .map_err(|e| file_error(&path, &anyhow::Error::from(e)))?;
        if all.texts.is_empty() {
            return Err(value_error(format!("{} holds no stories", path.display())));
        }
        let both = PyDict::new(py);
        for &protocol in protocols {
            // A few stories at a time with the GIL released, then a look for Ctrl-C; summed in
            // story order, so the result is the CLI's to the bit.
            let selected = select(&all.texts, stories, protocol);
            let mut per = Vec::with_capacity(selected.len());
            for chunk in selected.chunks(4 * threads) {
                per.extend(py.detach(|| score_stories(engine, chunk, protocol, threads)));
                py.check_signals()?;
            }
            let r = check_finite(sum_scores(&per)).map_err(|e| file_error(&path, &e))?;
            let d = PyDict::new(py);
            d.set_item("bpc", r.bpc())?;
            d.set_item("loss", r.loss())?;
            d.set_item("ppl", r.perplexity())?;
            d.set_item("stories", r.stories)?;
            d.set_item("tokens", r.tokens)?;
            d.set_item("chars", r.chars)?;
            d.set_item("cut", r.cut)?;
            if protocols.len() == 1 {
                return Ok(d);
            }
            both.set_item(if protocol == Protocol::Original { "original" } else { "exact" }, d)?;
        }
        Ok(both)
    }

    /// The model's vocabulary.
    #[getter]
    fn tokenizer(&self) -> Tokenizer {
        Tokenizer { vocab: Arc::new(self.engine.tokenizer.clone()) }
    }

    /// Vocabulary size.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.engine.config.vocab_size
    }

    /// Name of the ternary kernel in use.
    #[getter]
    fn kernel(&self) -> &'static str {
        self.engine.kernel.name()
    }

    fn __repr__(&self) -> String {
        let c = &self.engine.config;
        format!(
            "flashlm.Model(d={}, blocks={}, h={}, vocab={}, kernel={})",
            c.dim,
            c.n_blocks,
            c.glu_hidden,
            c.vocab_size,
            self.engine.kernel.name()
        )
    }
}

/// Pieces of generated text (from `Model.stream`).
#[pyclass(module = "flashlm._flashlm")]
struct TextStream {
    engine: Arc<Engine>,
    generation: Generation,
    done: bool,
}

#[pymethods]
impl TextStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The rest of the text at once, generated with the GIL released in slices of about
    /// 20 ms; between slices Ctrl-C (or any signal handler that raises) stops it with the
    /// handler's exception, within one slice.
    fn read_all(&mut self, py: Python<'_>) -> PyResult<String> {
        const SLICE: Duration = Duration::from_millis(20);
        let mut text = String::new();
        while !self.done {
            let (engine, g) = (&self.engine, &mut self.generation);
            let (part, finished) = py
                .detach(|| {
                    let t0 = Instant::now();
                    let mut part = String::new();
                    loop {
                        let piece = g.step(engine)?;
                        part.push_str(&piece.text);
                        if piece.finish.is_some() || t0.elapsed() >= SLICE {
                            return Ok((part, piece.finish.is_some()));
                        }
                    }
                })
                .map_err(generate_error)?;
            text.push_str(&part);
            self.done = finished;
            if !finished {
                py.check_signals()?;
            }
        }
        Ok(text)
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<String> {
        loop {
            if self.done {
                return Err(PyStopIteration::new_err(()));
            }
            let (engine, g) = (&self.engine, &mut self.generation);
            let piece = py.detach(|| g.step(engine)).map_err(generate_error)?;
            self.done = piece.finish.is_some();
            if !piece.text.is_empty() {
                return Ok(piece.text);
            }
        }
    }
}

/// FlashLM's vocabulary: GPT-2 BPE folded into the model's ids.
#[pyclass(module = "flashlm._flashlm", frozen)]
struct Tokenizer {
    vocab: Arc<Vocab>,
}

#[pymethods]
impl Tokenizer {
    /// A tokenizer from a `tokenizer.json` (FlashLM's, or the original's).
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Self> {
        let t = Vocab::load(&path).map_err(|e| {
            let msg = format!("{}: {e}", path.display());
            if std::fs::metadata(&path).is_err() {
                PyOSError::new_err(msg)
            } else {
                PyValueError::new_err(msg)
            }
        })?;
        Ok(Self { vocab: Arc::new(t) })
    }

    /// Text to ids.
    fn encode(&self, text: &str) -> Vec<u16> {
        self.vocab.encode(text)
    }

    /// Ids to text (ids outside the vocabulary raise ValueError).
    fn decode(&self, ids: Vec<i64>) -> PyResult<String> {
        let v = self.vocab.vocab_size();
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t as usize >= v) {
            return Err(value_error(format!("token id {bad} is outside the vocabulary (0..{v})")));
        }
        let ids: Vec<u16> = ids.iter().map(|&t| t as u16).collect();
        Ok(self.vocab.decode(&ids))
    }

    /// Vocabulary size.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.vocab.vocab_size()
    }
}

#[pymodule]
fn _flashlm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<TextStream>()?;
    m.add_class::<Tokenizer>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
