//! The FlashLM v4 "Bolt" model in burn, written with plain burn tensor ops so that it runs on
//! any burn backend (the backend is picked by the device: `Device::flex()`, `.autodiff()`).
//!
//! ```text
//! tokens [B,T] ─embedding─▶ h [B,T,d]
//!   N × BoltBlock:  h += mixer(norm1(h))     mixer: up (ternary d→2d) → gate σ, value
//!                                                   value ─causal depthwise conv (k taps)─▶ × gate
//!                                                   → down (ternary d→d)
//!                   h += ffn(norm2(h))       ffn:   W_down(silu(W_gate h) ⊙ W_up h), ternary
//!   final_norm ─▶ logits [B,T,V] = h · embeddingᵀ  (tied head)
//! ```
//!
//! Ternary layers ([`BitLinear`]) keep a latent float weight W and use
//! `Wq = clamp(round(W / (mean|W| + 1e-8)), -1, 1) · mean|W|` in the forward pass, with the
//! straight-through estimator `W + (Wq − W).detach()` so the gradient reaches W unchanged.
//! Parameter names follow the original PyTorch `state_dict` (`blocks.0.ffn.W_gate.weight`...),
//! and every weight has the PyTorch shape ([out, in] for linear layers, [d, 1, k] for the conv).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::activation::{log_softmax, sigmoid, silu};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use flashlm_core::{Config, NORM_EPS, QUANT_EPS};

/// Kaiming-normal with mode fan_out and the default leaky-ReLU(0) gain √2, as PyTorch.
fn kaiming_normal_fan_out<const D: usize>(shape: [usize; D], fan_out: usize, device: &Device) -> Tensor<D> {
    let std = (2.0f64).sqrt() / (fan_out as f64).sqrt();
    Tensor::random(shape, Distribution::Normal(0.0, std), device)
}

/// The ternary quantisation with a straight-through gradient:
/// forward value `clamp(round(W/(α+ε)),-1,1)·α` with α = mean|W|, gradient identity.
pub fn ternary_ste(w: Tensor<2>) -> Tensor<2> {
    let q = ternary_quantize(w.clone());
    w.clone() + (q - w).detach()
}

/// The ternary quantisation alone (no gradient trick): `clamp(round(W/(α+ε)),-1,1)·α`.
pub fn ternary_quantize(w: Tensor<2>) -> Tensor<2> {
    let alpha = w.clone().abs().mean().unsqueeze::<2>(); // [1, 1]
    w.div(alpha.clone().add_scalar(QUANT_EPS)).round().clamp(-1.0, 1.0).mul(alpha)
}

/// `y = x · Wqᵀ`, no bias; W is [out, in] as in PyTorch.
#[derive(Module, Debug)]
pub struct BitLinear {
    /// Latent float weight [out, in].
    pub weight: Param<Tensor<2>>,
}

impl BitLinear {
    /// Kaiming-normal (fan_out) initialised layer.
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        Self { weight: Param::from_tensor(kaiming_normal_fan_out([d_out, d_in], d_out, device)) }
    }

    /// [B, T, in] -> [B, T, out].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d_in] = x.dims();
        let wq = ternary_ste(self.weight.val()); // [out, in]
        let d_out = wq.dims()[0];
        x.reshape([b * t, d_in]).matmul(wq.transpose()).reshape([b, t, d_out])
    }

    /// The weight as ternary codes in {-1, 0, 1} (row-major [out, in]) and the scale α.
    pub fn ternary(&self) -> (Vec<i8>, f32) {
        let w: Vec<f32> = self.weight.val().into_data().try_to_vec::<f32>().expect("f32 weight");
        flashlm_core::quant::ternary_codes(&w)
    }
}

/// `x / sqrt(mean(x²) + 1e-6) · scale` over the last dimension.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// [d] gains, initialised to 1.
    pub scale: Param<Tensor<1>>,
}

impl RmsNorm {
    /// A norm with unit scale.
    pub fn new(d: usize, device: &Device) -> Self {
        Self { scale: Param::from_tensor(Tensor::ones([d], device)) }
    }

    /// [B, T, d] -> [B, T, d].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let rms = x.clone().square().mean_dim(2).add_scalar(NORM_EPS).sqrt(); // [B, T, 1]
        x.div(rms).mul(self.scale.val().unsqueeze::<3>())
    }
}

/// Causal depthwise convolution over time: `out[t, c] = Σ_j w[c, 0, j] · x[t - (k-1) + j, c]`
/// (PyTorch `Conv1d(d, d, k, padding=k-1, groups=d, bias=False)` keeping the first T outputs),
/// written as k shifted multiply-adds.
#[derive(Module, Debug)]
pub struct DepthwiseConv {
    /// [d, 1, k] taps, PyTorch layout.
    pub weight: Param<Tensor<3>>,
}

impl DepthwiseConv {
    /// Kaiming-normal (fan_out = d·k) taps.
    pub fn new(d: usize, k: usize, device: &Device) -> Self {
        Self { weight: Param::from_tensor(kaiming_normal_fan_out([d, 1, k], d * k, device)) }
    }

    /// [B, T, d] -> [B, T, d]; output t depends on inputs t-k+1..=t only.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let k = self.weight.dims()[2];
        let taps = self.weight.val().reshape([d, k]).transpose(); // [k, d]
        let padded = Tensor::cat(vec![Tensor::zeros([b, k - 1, d], &x.device()), x], 1); // [B, T+k-1, d]
        let mut out: Option<Tensor<3>> = None;
        for j in 0..k {
            let tap = taps.clone().narrow(0, j, 1).reshape([1, 1, d]);
            let term = padded.clone().narrow(1, j, t).mul(tap);
            out = Some(match out {
                None => term,
                Some(acc) => acc + term,
            });
        }
        out.expect("conv_taps > 0")
    }
}

/// The token mixer: gated causal depthwise conv between two ternary projections.
#[derive(Module, Debug)]
pub struct GatedConvMixer {
    /// d -> 2d: first half gate, second half value.
    pub up: BitLinear,
    /// Causal depthwise conv on the value.
    pub conv: DepthwiseConv,
    /// d -> d.
    pub down: BitLinear,
}

impl GatedConvMixer {
    /// [B, T, d] -> [B, T, d].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gv = self.up.forward(x); // [B, T, 2d]
        let d = gv.dims()[2] / 2;
        let gate = sigmoid(gv.clone().narrow(2, 0, d));
        let val = gv.narrow(2, d, d);
        self.down.forward(self.conv.forward(val).mul(gate))
    }
}

pub use glu::TernaryGlu;

mod glu {
    // Field names keep the original's state_dict spelling (`ffn.W_gate.weight`).
    #![allow(non_snake_case)]
    use super::*;

    /// `W_down(silu(W_gate x) ⊙ W_up x)`, all ternary.
    #[derive(Module, Debug)]
    pub struct TernaryGlu {
        /// d -> h.
        pub W_gate: BitLinear,
        /// d -> h.
        pub W_up: BitLinear,
        /// h -> d.
        pub W_down: BitLinear,
    }

    impl TernaryGlu {
        /// [B, T, d] -> [B, T, d].
        pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
            self.W_down.forward(silu(self.W_gate.forward(x.clone())).mul(self.W_up.forward(x)))
        }
    }
}

/// One block: `x += mixer(norm1(x)); x += ffn(norm2(x))`.
#[derive(Module, Debug)]
pub struct BoltBlock {
    /// Pre-mixer norm.
    pub norm1: RmsNorm,
    /// Token mixer.
    pub mixer: GatedConvMixer,
    /// Pre-FFN norm.
    pub norm2: RmsNorm,
    /// Channel mixer.
    pub ffn: TernaryGlu,
}

impl BoltBlock {
    /// [B, T, d] -> [B, T, d].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.mixer.forward(self.norm1.forward(x));
        x.clone() + self.ffn.forward(self.norm2.forward(x))
    }
}

/// The token embedding, also the output head (tied).
#[derive(Module, Debug)]
pub struct Embedding {
    /// [vocab, d].
    pub weight: Param<Tensor<2>>,
}

/// The whole model.
#[derive(Module, Debug)]
pub struct Bolt {
    /// Tied embedding / head.
    pub embedding: Embedding,
    /// The blocks.
    pub blocks: Vec<BoltBlock>,
    /// Norm before the head.
    pub final_norm: RmsNorm,
}

impl Bolt {
    /// A freshly initialised model, as the original: ternary and conv weights
    /// kaiming-normal (fan_out, gain √2), embedding normal(0, 0.02), norm scales 1.
    /// Random numbers come from the device's generator (seed it with `device.seed`).
    pub fn init(cfg: &Config, device: &Device) -> Bolt {
        let (d, h, k) = (cfg.dim, cfg.glu_hidden, cfg.conv_taps);
        let blocks = (0..cfg.n_blocks)
            .map(|_| BoltBlock {
                norm1: RmsNorm::new(d, device),
                mixer: GatedConvMixer {
                    up: BitLinear::new(d, 2 * d, device),
                    conv: DepthwiseConv::new(d, k, device),
                    down: BitLinear::new(d, d, device),
                },
                norm2: RmsNorm::new(d, device),
                ffn: TernaryGlu {
                    W_gate: BitLinear::new(d, h, device),
                    W_up: BitLinear::new(d, h, device),
                    W_down: BitLinear::new(h, d, device),
                },
            })
            .collect();
        Bolt {
            embedding: Embedding {
                weight: Param::from_tensor(Tensor::random(
                    [cfg.vocab_size, d],
                    Distribution::Normal(0.0, 0.02),
                    device,
                )),
            },
            blocks,
            final_norm: RmsNorm::new(d, device),
        }
    }

    /// Hidden states after the final norm: [B, T] ids -> [B, T, d].
    pub fn hidden(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let mut h = burn::tensor::module::embedding(self.embedding.weight.val(), tokens);
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.final_norm.forward(h)
    }

    /// Logits: [B, T] ids -> [B, T, vocab].
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let h = self.hidden(tokens);
        let [b, t, d] = h.dims();
        let w = self.embedding.weight.val(); // [V, d]
        let v = w.dims()[0];
        h.reshape([b * t, d]).matmul(w.transpose()).reshape([b, t, v])
    }

    /// Mean cross-entropy (nats) of next-token prediction; targets [B, T].
    pub fn loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let logits = self.forward(tokens);
        cross_entropy(logits, targets)
    }

    /// Model shape, read from the weights (seq_len is not stored in weights: pass it).
    pub fn config(&self, seq_len: usize) -> Config {
        let [vocab_size, dim] = self.embedding.weight.dims();
        let (glu_hidden, conv_taps) = self
            .blocks
            .first()
            .map(|b| (b.ffn.W_gate.weight.dims()[0], b.mixer.conv.weight.dims()[2]))
            .unwrap_or((0, 0));
        Config { vocab_size, dim, n_blocks: self.blocks.len(), glu_hidden, conv_taps, seq_len }
    }

    /// Every parameter with its PyTorch `state_dict` name, in a fixed order.
    pub fn named_params(&self) -> Vec<NamedParam> {
        let mut v = Collect::default();
        self.visit(&mut v);
        v.out
    }

    /// Replace every parameter's values by the tensor of the same name in `weights`
    /// (name -> (shape, values)). Every parameter must be present with its exact shape;
    /// parameter ids are kept. Extra entries are reported as an error too.
    pub fn with_weights(self, weights: &NamedTensors) -> Result<Self, String> {
        let mut m = Assign { path: Vec::new(), weights, used: 0, errors: Vec::new() };
        let model = self.map(&mut m);
        if !m.errors.is_empty() {
            return Err(m.errors.join("; "));
        }
        if m.used != weights.len() {
            let known: Vec<String> = model.named_params().into_iter().map(|p| p.name).collect();
            let extra: Vec<&String> = weights.keys().filter(|k| !known.contains(k)).collect();
            return Err(format!("unexpected tensors: {extra:?}"));
        }
        Ok(model)
    }

    /// Save all parameters as safetensors (f32, PyTorch names and shapes).
    pub fn save_safetensors(&self, path: &std::path::Path) -> Result<(), String> {
        let params = self.named_params();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = params
            .iter()
            .map(|p| {
                (p.name.clone(), p.shape.clone(), p.values.iter().flat_map(|v| v.to_le_bytes()).collect())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

pub use flashlm_convert::{NamedTensors, read_safetensors};

struct Assign<'a> {
    path: Vec<String>,
    weights: &'a NamedTensors,
    used: usize,
    errors: Vec<String>,
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.join(".");
        let Some((shape, values)) = self.weights.get(&name) else {
            self.errors.push(format!("missing tensor {name}"));
            return param;
        };
        let want = param.shape().dims::<D>().to_vec();
        if *shape != want || values.len() != want.iter().product::<usize>() {
            self.errors.push(format!("{name}: shape {shape:?}, the model needs {want:?}"));
            return param;
        }
        self.used += 1;
        let values = values.clone();
        param.map(move |old| {
            let grad = old.is_require_grad();
            let t = Tensor::<D>::from_data(TensorData::new(values, want), &old.device());
            if grad { t.require_grad() } else { t }
        })
    }
}

/// Mean cross-entropy of logits [B, T, V] against targets [B, T].
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1);
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // [N, 1]
    picked.mean().neg()
}

/// A parameter's name, id, shape and values (f32, row-major).
#[derive(Debug, Clone)]
pub struct NamedParam {
    /// PyTorch-style dotted name.
    pub name: String,
    /// burn's parameter id.
    pub id: ParamId,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

#[derive(Default)]
struct Collect {
    path: Vec<String>,
    out: Vec<NamedParam>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        self.out.push(NamedParam {
            name: self.path.join("."),
            id: param.id,
            shape: tensor.dims().to_vec(),
            values: tensor.into_data().try_to_vec::<f32>().expect("f32 parameter"),
        });
    }
}

/// The CPU device used by default: burn's flex backend (or ndarray with the `ndarray`
/// feature), with autodiff when `train` is true.
pub fn cpu_device(train: bool) -> Device {
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    let d = Device::ndarray();
    #[cfg(not(feature = "ndarray"))]
    let d = Device::flex();
    if train { d.autodiff() } else { d }
}

/// Name of the backend [`cpu_device`] uses.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "ndarray") { "ndarray" } else { "flex" }
}
