//! A plain f64 forward pass of an XVERSE (Llama-layout) model straight from its Hugging Face
//! tensors: the reference that converter and runtime are checked against end to end.
//!
//! It follows transformers' `LlamaForCausalLM` step by step, in f64, without any of the tricks a
//! fast implementation uses: no quantization, no q/k permutation (RoPE is applied in Hugging
//! Face's "rotate_half" layout, pairing element `i` with element `i + head_dim/2` of each head),
//! no KV cache, no fused kernels. Every position of the prompt gets its logits.
//!
//! ```text
//! x = embed_tokens[ids]
//! for each layer:
//!     h = rms_norm(x) * input_layernorm
//!     q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ            (k and v have num_key_value_heads heads)
//!     q, k = rope_rotate_half(q, k, position)
//!     a = softmax(q·kᵀ / sqrt(head_dim) + causal mask)·v    (query head h reads kv head h / n_rep)
//!     x = x + a·Woᵀ
//!     h = rms_norm(x) * post_attention_layernorm
//!     x = x + (silu(h·Wgateᵀ) * h·Wupᵀ)·Wdownᵀ
//! logits = (rms_norm(x) * norm)·lm_headᵀ
//! ```
//!
//! Weights come from safetensors files in f32, bf16 or f16 (every value is widened to f64
//! exactly): a checkpoint folder (`model.safetensors.index.json` or `model.safetensors`), or the
//! fixtures' `expected.index.json` (the same tensors as f32).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a model could not be loaded or run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefError(pub String);

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf reference: {}", self.0)
    }
}

impl std::error::Error for RefError {}

/// Shorthand for a [`RefError`] result.
pub type Result<T> = std::result::Result<T, RefError>;

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(RefError(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

/// The hyperparameters of `config.json` that the forward pass needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// `num_key_value_heads`, or `num_attention_heads` when the key is absent (XVERSE's configs).
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// `rope_theta`, or 10000 when the key is absent.
    pub rope_theta: f64,
}

impl Config {
    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Config> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RefError(format!("config.json: {e}")))?;
        let int = |key: &str| -> Result<usize> {
            match v.get(key).and_then(serde_json::Value::as_u64) {
                Some(n) => usize::try_from(n).map_err(|_| RefError(format!("{key} too large"))),
                None => fail(format!("config.json: {key} missing or not an integer")),
            }
        };
        let float = |key: &str| v.get(key).and_then(serde_json::Value::as_f64);
        let heads = int("num_attention_heads")?;
        let kv_heads = match v.get("num_key_value_heads") {
            None | Some(serde_json::Value::Null) => heads,
            Some(_) => int("num_key_value_heads")?,
        };
        let c = Config {
            hidden_size: int("hidden_size")?,
            intermediate_size: int("intermediate_size")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            num_hidden_layers: int("num_hidden_layers")?,
            vocab_size: int("vocab_size")?,
            rms_norm_eps: float("rms_norm_eps")
                .ok_or_else(|| RefError("config.json: rms_norm_eps missing".into()))?,
            rope_theta: float("rope_theta").unwrap_or(10000.0),
        };
        if heads == 0
            || kv_heads == 0
            || !c.hidden_size.is_multiple_of(heads)
            || !heads.is_multiple_of(kv_heads)
            || !c.head_dim().is_multiple_of(2)
        {
            return fail(format!(
                "config.json: hidden {} / heads {heads} / kv heads {kv_heads} do not make whole, even heads",
                c.hidden_size
            ));
        }
        Ok(c)
    }

    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Config> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| RefError(format!("{}: {e}", path.display())))?;
        Config::from_json(&text)
    }

    /// Elements per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors from safetensors files
// ---------------------------------------------------------------------------------------------

/// A tensor widened to f64, row-major, PyTorch shape order (outermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    /// Row `i` of a 2-D tensor.
    pub fn row(&self, i: usize) -> &[f64] {
        let cols = self.shape.last().copied().unwrap_or(0);
        &self.data[i * cols..(i + 1) * cols]
    }
}

/// Widens one safetensors tensor to f64 (f32, bf16 and f16: all exact).
pub fn tensor_to_f64(view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f64>> {
    use safetensors::Dtype;
    let bytes = view.data();
    let data = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        other => return fail(format!("unsupported dtype {other:?}")),
    };
    Ok(data)
}

/// Every tensor of a set of safetensors files, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Reads every tensor of `files`.
    pub fn from_files(files: &[PathBuf]) -> Result<Weights> {
        let mut w = Weights::default();
        for path in files {
            let shown = path.display();
            let bytes = std::fs::read(path).map_err(|e| RefError(format!("{shown}: {e}")))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| RefError(format!("{shown}: {e}")))?;
            for (name, view) in st.iter() {
                let data = tensor_to_f64(&view)
                    .map_err(|e| RefError(format!("{shown}: {name}: {}", e.0)))?;
                let t = Tensor {
                    shape: view.shape().to_vec(),
                    data,
                };
                if w.tensors.insert(name.to_string(), t).is_some() {
                    return fail(format!("{shown}: tensor {name} appears twice"));
                }
            }
        }
        Ok(w)
    }

    /// The files an index (`{"weight_map": {tensor: file}}`) names, in sorted order.
    pub fn index_files(index: &Path) -> Result<Vec<PathBuf>> {
        let shown = index.display();
        let text = std::fs::read_to_string(index).map_err(|e| RefError(format!("{shown}: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| RefError(format!("{shown}: {e}")))?;
        let Some(map) = v.get("weight_map").and_then(serde_json::Value::as_object) else {
            return fail(format!("{shown}: no weight_map"));
        };
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(serde_json::Value::as_str)
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// The safetensors weights of a folder: `model.safetensors.index.json`, else
    /// `model.safetensors`, else the fixtures' f32 copy `expected.index.json`.
    pub fn from_dir(dir: &Path) -> Result<Weights> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let expected = dir.join("expected.index.json");
        let files = if index.is_file() {
            Weights::index_files(&index)?
        } else if single.is_file() {
            vec![single]
        } else if expected.is_file() {
            Weights::index_files(&expected)?
        } else {
            return fail(format!("{}: no safetensors weights found", dir.display()));
        };
        Weights::from_files(&files)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        match self.tensors.get(name) {
            None => fail(format!("tensor {name} missing")),
            Some(t) if t.shape != shape => fail(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.shape
            )),
            Some(t) => Ok(t),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// The weights of one decoder layer.
#[derive(Clone, Debug)]
struct Layer<'w> {
    input_layernorm: &'w Tensor,
    q_proj: &'w Tensor,
    k_proj: &'w Tensor,
    v_proj: &'w Tensor,
    o_proj: &'w Tensor,
    post_attention_layernorm: &'w Tensor,
    gate_proj: &'w Tensor,
    up_proj: &'w Tensor,
    down_proj: &'w Tensor,
}

/// A Hugging Face XVERSE checkpoint held in f64.
#[derive(Clone, Debug)]
pub struct HfModel {
    pub config: Config,
    pub weights: Weights,
}

impl HfModel {
    /// `config.json` and the safetensors weights of `dir` (see [`Weights::from_dir`]).
    pub fn load(dir: &Path) -> Result<HfModel> {
        HfModel::new(Config::load(dir)?, Weights::from_dir(dir)?)
    }

    /// A model from a config and its weights; every tensor is checked now.
    pub fn new(config: Config, weights: Weights) -> Result<HfModel> {
        let m = HfModel { config, weights };
        m.layers()?;
        m.embed_and_head()?;
        Ok(m)
    }

    fn embed_and_head(&self) -> Result<(&Tensor, &Tensor, &Tensor)> {
        let c = &self.config;
        let w = &self.weights;
        Ok((
            w.get("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?,
            w.get("model.norm.weight", &[c.hidden_size])?,
            w.get("lm_head.weight", &[c.vocab_size, c.hidden_size])?,
        ))
    }

    fn layers(&self) -> Result<Vec<Layer<'_>>> {
        let c = &self.config;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let kv = c.num_key_value_heads * c.head_dim();
        (0..c.num_hidden_layers)
            .map(|l| {
                let get = |name: &str, shape: &[usize]| {
                    self.weights
                        .get(&format!("model.layers.{l}.{name}.weight"), shape)
                };
                Ok(Layer {
                    input_layernorm: get("input_layernorm", &[d])?,
                    q_proj: get("self_attn.q_proj", &[d, d])?,
                    k_proj: get("self_attn.k_proj", &[kv, d])?,
                    v_proj: get("self_attn.v_proj", &[kv, d])?,
                    o_proj: get("self_attn.o_proj", &[d, d])?,
                    post_attention_layernorm: get("post_attention_layernorm", &[d])?,
                    gate_proj: get("mlp.gate_proj", &[f, d])?,
                    up_proj: get("mlp.up_proj", &[f, d])?,
                    down_proj: get("mlp.down_proj", &[d, f])?,
                })
            })
            .collect()
    }

    /// The logits (`vocab_size` values) of every position of `ids`, computed in f64.
    pub fn forward(&self, ids: &[u32]) -> Result<Vec<Vec<f64>>> {
        let c = &self.config;
        let (embed, final_norm, lm_head) = self.embed_and_head()?;
        let layers = self.layers()?;
        let eps = c.rms_norm_eps;

        // token embeddings: one hidden state per position
        let mut x: Vec<Vec<f64>> = Vec::with_capacity(ids.len());
        for &id in ids {
            let id = id as usize;
            if id >= c.vocab_size {
                return fail(format!(
                    "token {id} outside the vocabulary of {}",
                    c.vocab_size
                ));
            }
            x.push(embed.row(id).to_vec());
        }

        for layer in &layers {
            // self-attention block (pre-norm, residual)
            let h: Vec<Vec<f64>> = x
                .iter()
                .map(|xt| rms_norm(xt, &layer.input_layernorm.data, eps))
                .collect();
            let mut q: Vec<Vec<f64>> = h.iter().map(|ht| matvec(layer.q_proj, ht)).collect();
            let mut k: Vec<Vec<f64>> = h.iter().map(|ht| matvec(layer.k_proj, ht)).collect();
            let v: Vec<Vec<f64>> = h.iter().map(|ht| matvec(layer.v_proj, ht)).collect();
            for (pos, (qt, kt)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
                rope_rotate_half(qt, c.head_dim(), pos, c.rope_theta);
                rope_rotate_half(kt, c.head_dim(), pos, c.rope_theta);
            }
            let attn = causal_attention(&q, &k, &v, c);
            for (xt, at) in x.iter_mut().zip(&attn) {
                add_assign(xt, &matvec(layer.o_proj, at));
            }

            // SwiGLU MLP block (pre-norm, residual)
            for xt in x.iter_mut() {
                let h = rms_norm(xt, &layer.post_attention_layernorm.data, eps);
                let gate = matvec(layer.gate_proj, &h);
                let up = matvec(layer.up_proj, &h);
                let act: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect();
                add_assign(xt, &matvec(layer.down_proj, &act));
            }
        }

        // final norm and the (untied) output head
        Ok(x.iter()
            .map(|xt| matvec(lm_head, &rms_norm(xt, &final_norm.data, eps)))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// The operations
// ---------------------------------------------------------------------------------------------

/// `x / sqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(x: &[f64], weight: &[f64], eps: f64) -> Vec<f64> {
    let mean_sq = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    x.iter().zip(weight).map(|(v, w)| v * scale * w).collect()
}

/// `W·x` for a weight of shape `[out, in]` (PyTorch's `nn.Linear` without bias).
pub fn matvec(w: &Tensor, x: &[f64]) -> Vec<f64> {
    w.data
        .chunks_exact(x.len())
        .map(|row| dot(row, x))
        .collect()
}

/// `Σ a[i]·b[i]` over the common length, summed in order. A plain indexed loop: the tests run
/// unoptimized, where it is several times faster than an iterator chain.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sum = 0.0;
    let mut i = 0;
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

/// `x += y`.
fn add_assign(x: &mut [f64], y: &[f64]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x · sigmoid(x)`.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Rotary position embedding in Hugging Face's layout, in place, on every head of `x`
/// (`x.len()` is a multiple of `head_dim`): element `i` of a head rotates together with element
/// `i + head_dim/2` by the angle `pos · theta^(-2i/head_dim)`, i.e.
/// `x·cos + rotate_half(x)·sin` with `rotate_half([x1, x2]) = [-x2, x1]`.
pub fn rope_rotate_half(x: &mut [f64], head_dim: usize, pos: usize, theta: f64) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let inv_freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
            let (sin, cos) = (pos as f64 * inv_freq).sin_cos();
            let (x1, x2) = (head[i], head[i + half]);
            head[i] = x1 * cos - x2 * sin;
            head[i + half] = x2 * cos + x1 * sin;
        }
    }
}

/// Causal multi-head attention over all positions: query head `h` attends with kv head
/// `h / (heads / kv_heads)` (transformers' `repeat_kv`) to positions `0..=t`, scores scaled by
/// `1/sqrt(head_dim)`. Returns the concatenated head outputs of every position.
pub fn causal_attention(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    c: &Config,
) -> Vec<Vec<f64>> {
    let hd = c.head_dim();
    let n_rep = c.num_attention_heads / c.num_key_value_heads;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![vec![0.0; c.hidden_size]; q.len()];
    for (t, out_t) in out.iter_mut().enumerate() {
        for h in 0..c.num_attention_heads {
            let kv_h = h / n_rep;
            let qh = &q[t][h * hd..(h + 1) * hd];
            let scores: Vec<f64> = (0..=t)
                .map(|s| dot(qh, &k[s][kv_h * hd..(kv_h + 1) * hd]) * scale)
                .collect();
            let probs = softmax(&scores);
            let oh = &mut out_t[h * hd..(h + 1) * hd];
            for (s, p) in probs.iter().enumerate() {
                let vh = &v[s][kv_h * hd..(kv_h + 1) * hd];
                for (o, x) in oh.iter_mut().zip(vh) {
                    *o += p * x;
                }
            }
        }
    }
    out
}

/// `exp(x - max) / Σ exp(x - max)`.
pub fn softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

// ---------------------------------------------------------------------------------------------
// Comparing logits
// ---------------------------------------------------------------------------------------------

/// `log(softmax(x))`, computed stably.
pub fn log_softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

/// `KL(P ‖ Q) = Σ p·(log p − log q)` of the distributions `softmax(p_logits)` (the reference)
/// and `softmax(q_logits)` (the model under test), in nats.
pub fn kl_divergence(p_logits: &[f64], q_logits: &[f64]) -> f64 {
    let lp = log_softmax(p_logits);
    let lq = log_softmax(q_logits);
    lp.iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// `max|a − b| / max|b|`: the largest difference relative to the reference's largest magnitude.
pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    diff / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_at_position_zero_is_identity_and_keeps_norms() {
        let x: Vec<f64> = (0..16).map(|i| i as f64 - 7.5).collect();
        let mut y = x.clone();
        rope_rotate_half(&mut y, 8, 0, 10000.0);
        assert_eq!(x, y);
        rope_rotate_half(&mut y, 8, 5, 10000.0);
        for (hx, hy) in x.chunks(8).zip(y.chunks(8)) {
            for i in 0..4 {
                let nx = hx[i].hypot(hx[i + 4]);
                let ny = hy[i].hypot(hy[i + 4]);
                assert!((nx - ny).abs() < 1e-12);
            }
        }
        // pair 0 rotates by exactly `pos` radians
        let (s, c) = 5f64.sin_cos();
        assert!((y[0] - (x[0] * c - x[4] * s)).abs() < 1e-12);
    }

    #[test]
    fn kl_and_argmax() {
        let p = [1.0, 2.0, 3.0];
        assert_eq!(kl_divergence(&p, &p), 0.0);
        assert!(kl_divergence(&p, &[3.0, 2.0, 1.0]) > 0.5);
        // softmax is shift-invariant
        assert!(kl_divergence(&p, &[11.0, 12.0, 13.0]) < 1e-12);
        assert_eq!(argmax(&p), 2);
        assert_eq!(argmax(&[5.0, 5.0]), 0);
        assert!((max_rel_diff(&[1.0, 2.2], &[1.0, 2.0]) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn config_defaults() {
        let c = Config::from_json(
            r#"{"hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4,
                "num_hidden_layers": 2, "vocab_size": 512, "rms_norm_eps": 1e-6}"#,
        )
        .unwrap();
        assert_eq!(c.num_key_value_heads, 4);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.head_dim(), 16);
        assert!(Config::from_json(r#"{"hidden_size": 64}"#).is_err());
    }
}
