//! The published XVERSE shapes (from each size's `config.json`) and the shape used for speed
//! comparisons on small machines.
//!
//! Every XVERSE model is multi-head (no `num_key_value_heads`, so kv heads = heads), head_dim
//! 128, rotary base 10000, RMSNorm eps 1e-6, untied `lm_head`.

/// One XVERSE shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// Short name, as the files in `shared/presets/` are named (`xverse-7b`, …).
    pub name: &'static str,
    /// What it is: the published models with this shape.
    pub description: &'static str,
    /// `hidden_size`.
    pub hidden: usize,
    /// `intermediate_size`.
    pub ffn: usize,
    /// `num_attention_heads` (= key/value heads).
    pub heads: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `max_position_embeddings`.
    pub context: usize,
    /// `vocab_size`.
    pub vocab: usize,
}

/// XVERSE-7B, -7B-Chat.
pub const XVERSE_7B: Preset = Preset {
    name: "xverse-7b",
    description: "XVERSE-7B, -7B-Chat",
    hidden: 4096,
    ffn: 11008,
    heads: 32,
    layers: 32,
    context: 8192,
    vocab: 100534,
};

/// XVERSE-13B(-2), -13B-Chat.
pub const XVERSE_13B: Preset = Preset {
    name: "xverse-13b",
    description: "XVERSE-13B(-2), -13B-Chat",
    hidden: 5120,
    ffn: 13824,
    heads: 40,
    layers: 40,
    context: 8192,
    vocab: 100534,
};

/// XVERSE-13B as first released (vocab 100278).
pub const XVERSE_13B_FIRST_RELEASE: Preset = Preset {
    name: "xverse-13b-first-release",
    description: "XVERSE-13B as first released (vocab 100278)",
    vocab: 100278,
    ..XVERSE_13B
};

/// XVERSE-13B-256K (context 32768 in its config).
pub const XVERSE_13B_256K: Preset = Preset {
    name: "xverse-13b-256k",
    description: "XVERSE-13B-256K",
    context: 32768,
    ..XVERSE_13B
};

/// XVERSE-65B, -65B-2, -65B-Chat.
pub const XVERSE_65B: Preset = Preset {
    name: "xverse-65b",
    description: "XVERSE-65B, -65B-2, -65B-Chat",
    hidden: 8192,
    ffn: 22016,
    heads: 64,
    layers: 80,
    context: 16384,
    vocab: 100534,
};

/// The benchmark shape (not a published model): 1.23 B parameters.
pub const BENCH_1B: Preset = Preset {
    name: "bench-1b",
    description: "benchmark shape (not a published model)",
    hidden: 2048,
    ffn: 5632,
    heads: 16,
    layers: 16,
    context: 8192,
    vocab: 100534,
};

/// Every preset, smallest first.
pub const ALL: [Preset; 6] = [
    BENCH_1B,
    XVERSE_7B,
    XVERSE_13B,
    XVERSE_13B_FIRST_RELEASE,
    XVERSE_13B_256K,
    XVERSE_65B,
];

/// The preset called `name` (case-insensitive).
pub fn find(name: &str) -> Option<Preset> {
    ALL.iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

impl Preset {
    /// Key/value heads: XVERSE has no grouped-query attention.
    pub fn kv_heads(&self) -> usize {
        self.heads
    }

    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Number of parameters:
    /// `2·vocab·hidden + layers·(4·hidden² + 3·hidden·ffn + 2·hidden) + hidden`
    /// (embedding and untied lm_head, q/k/v/o, gate/up/down, two norms per layer, final norm).
    pub fn params(&self) -> u64 {
        let (v, h, f, l) = (
            self.vocab as u64,
            self.hidden as u64,
            self.ffn as u64,
            self.layers as u64,
        );
        2 * v * h + l * (4 * h * h + 3 * h * f + 2 * h) + h
    }

    /// Bytes of the weights in bf16 (2 bytes per parameter).
    pub fn bf16_bytes(&self) -> u64 {
        self.params() * 2
    }

    /// Bytes of a key+value cache entry for one token in f16 (all layers).
    pub fn kv_bytes_per_token_f16(&self) -> u64 {
        2 * self.layers as u64 * (self.kv_heads() * self.head_dim()) as u64 * 2
    }
}

/// The table `xverse-models presets` prints.
pub fn table() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:>6} {:>6} {:>5} {:>6} {:>7} {:>7} {:>16} {:>10}  models",
        "name", "hidden", "ffn", "heads", "layers", "context", "vocab", "parameters", "bf16 GB"
    );
    for p in ALL {
        let _ = writeln!(
            s,
            "{:<26} {:>6} {:>6} {:>5} {:>6} {:>7} {:>7} {:>16} {:>10.2}  {}",
            p.name,
            p.hidden,
            p.ffn,
            p.heads,
            p.layers,
            p.context,
            p.vocab,
            group_thousands(p.params()),
            p.bf16_bytes() as f64 / 1e9,
            p.description
        );
    }
    s
}

/// `1234567` → `"1,234,567"`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers in `shared/presets/README.md`.
    #[test]
    fn parameter_counts_match_the_published_table() {
        assert_eq!(XVERSE_7B.params(), 7_299_846_144);
        assert_eq!(XVERSE_13B.params(), 13_717_652_480);
        assert_eq!(XVERSE_13B_FIRST_RELEASE.params(), 13_715_031_040);
        assert_eq!(XVERSE_13B_256K.params(), 13_717_652_480);
        assert_eq!(XVERSE_65B.params(), 66_408_521_728);
        // The README says "≈ 1.22 B"; its own formula gives 1.234 B for this shape.
        assert_eq!(BENCH_1B.params(), 1_233_938_432);
        // DESIGN.md: "bf16 132.8 GB"
        assert_eq!(
            format!("{:.1}", XVERSE_65B.bf16_bytes() as f64 / 1e9),
            "132.8"
        );
        assert_eq!(
            format!("{:.2}", XVERSE_7B.bf16_bytes() as f64 / 1e9),
            "14.60"
        );
    }

    #[test]
    fn shapes_are_consistent() {
        for p in ALL {
            assert_eq!(p.hidden % p.heads, 0, "{}", p.name);
            assert_eq!(p.head_dim(), 128, "{}", p.name);
            assert_eq!(p.kv_heads(), p.heads);
            assert_eq!(find(p.name), Some(p));
            assert_eq!(find(&p.name.to_uppercase()), Some(p));
        }
        assert_eq!(find("xverse-3b"), None);
        assert_eq!(XVERSE_13B_256K.context, 32768);
        assert_eq!(XVERSE_65B.context, 16384);
        // 32 KiB of f32 hidden state per token at 65B (DESIGN.md §5).
        assert_eq!(XVERSE_65B.hidden * 4, 32 * 1024);
    }

    #[test]
    fn table_lists_every_preset() {
        let t = table();
        for p in ALL {
            assert!(t.contains(p.name));
        }
        assert!(t.contains("66,408,521,728"));
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(7_299_846_144), "7,299,846,144");
    }
}
