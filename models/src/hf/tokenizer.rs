//! An XVERSE-style Hugging Face `tokenizer.json` of any vocabulary size, and the small
//! `tokenizer_config.json` / `special_tokens_map.json` beside it.
//!
//! Laid out like the developer fixture's tokenizer (`shared/fixtures/tiny-xverse-*/tokenizer.json`)
//! and XVERSE's own: `BPE(byte_fallback = true, unk "<unk>", fuse_unk = false)`, no normalizer,
//! pre-tokenizer `Sequence[Metaspace("▁", prepend_scheme "never", split), Digits(individual),
//! Split(\p{P}, Isolated)]`, decoder `Sequence[Replace("▁" → " "), ByteFallback, Fuse]`, no
//! post-processor (nothing adds BOS).
//!
//! Vocabulary (ids in this order, exactly `n` entries):
//! * 0 `<unk>`, 1 `<pad>`, 2 `<|startoftext|>`, 3 `<|endoftext|>` (also special added tokens);
//! * 4..260 `<0x00>`..`<0xFF>`, so any text encodes through byte fallback;
//! * single characters: `▁`, printable ASCII, a few Latin-1 letters, a few common CJK characters;
//! * merge results, each the concatenation of a pair of earlier tokens (the merge list, in rank
//!   order): English words (`▁the`, `the`, `▁The`, …), a few CJK words, more CJK characters, then
//!   lowercase letter strings by length (`▁a`…, `ab`…, `▁ab`…, `abc`…) until the vocabulary is
//!   full. Each word's merges are chosen from how the earlier merges split it, so the tokenizer
//!   really encodes the word as one token (`" the world"` → `▁the`, `▁world`). Deterministic:
//!   the same `n` always gives the same bytes, and a smaller vocabulary is a prefix of a larger.
//!
//! Characters that are in no token (most CJK, `\n`, tabs, emoji) go through `<0xXX>` tokens, and
//! every text decodes back to itself.

use std::collections::HashMap;

use serde::{Serialize, Serializer};

use crate::vocab::{BOS_ID, EOS_ID, MIN_VOCAB, PAD_ID, UNK_ID};

/// The smallest vocabulary: the 4 special and 256 byte tokens plus `▁` (without it, a space
/// would decode as `▁`).
pub const MIN_HF_VOCAB: usize = MIN_VOCAB + 1;

/// The Metaspace replacement character.
pub const SPACE: &str = "▁";

/// The special tokens, by id.
pub const SPECIALS: [&str; 4] = ["<unk>", "<pad>", "<|startoftext|>", "<|endoftext|>"];

/// Latin-1 letters of the single-character tokens.
const LATIN1: &str = "éäöüßàèçñáóíúâêôÄÖÜÉ";
/// CJK characters of the single-character tokens: the demo prompt's, and a few of the most
/// common ones.
const CJK_FIRST: &str = "北京的景点故宫天坛万里长城等深圳你好世界中文是了人在有我这个们";
/// CJK words merged after the English word pieces (when their characters are in the vocab).
const CJK_WORDS: &[&str] = &[
    "北京",
    "景点",
    "故宫",
    "天坛",
    "万里",
    "长城",
    "万里长城",
    "深圳",
    "你好",
    "世界",
    "中文",
    "我们",
    "这个",
    "人们",
    "是的",
];
/// More common CJK characters, added after the CJK words.
const CJK_MORE: &str = "一不他大来上国到说和地也子时道出要于就下得可年生自会那后能对着事其里所去\
    行过家十用发如然作方成者多日都三小军二无同么经法当起与看学进种将还分此心前面又定见只主没公从";

/// English words whose pieces are merged first (with and without a leading `▁`, and
/// capitalized with `▁`).
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "model", "layer", "hello",
    "world", "token", "xverse", "llama", "license", "software", "program", "work", "copy",
];

/// A BPE vocabulary: tokens by id, and the merges in rank order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpeVocab {
    /// `tokens[id]`.
    pub tokens: Vec<String>,
    /// Merges, highest priority first; each result `a + b` is in `tokens` after `a` and `b`.
    pub merges: Vec<(String, String)>,
}

struct Builder {
    v: BpeVocab,
    /// Id of each token.
    ids: HashMap<String, u32>,
    /// Rank of each merge, by the ids of its pair.
    ranks: HashMap<(u32, u32), usize>,
    n: usize,
}

impl Builder {
    fn full(&self) -> bool {
        self.v.tokens.len() >= self.n
    }

    fn has(&self, t: &str) -> bool {
        self.ids.contains_key(t)
    }

    /// Adds `t` unless it exists or the vocabulary is full; returns its id if it is a token.
    fn token(&mut self, t: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(t) {
            return Some(id);
        }
        if self.full() {
            return None;
        }
        let id = self.v.tokens.len() as u32;
        self.ids.insert(t.to_string(), id);
        self.v.tokens.push(t.to_string());
        Some(id)
    }

    /// How the merges so far split `word` (BPE: the lowest-ranked adjacent pair merges first,
    /// leftmost on ties), as token ids; `None` when a character of it is not a token.
    fn segment(&self, word: &str) -> Option<Vec<u32>> {
        let mut buf = [0u8; 4];
        let mut parts: Vec<u32> = word
            .chars()
            .map(|c| self.ids.get(&*c.encode_utf8(&mut buf)).copied())
            .collect::<Option<_>>()?;
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0], w[1])).map(|&r| (r, i)))
                .min();
            let Some((_, i)) = best else {
                return Some(parts);
            };
            let merged = format!(
                "{}{}",
                self.v.tokens[parts[i] as usize],
                self.v.tokens[parts[i + 1] as usize]
            );
            parts[i] = self.ids[&merged];
            parts.remove(i + 1);
        }
    }

    /// Appends the merges that make `word` one token. Because they rank after every earlier
    /// merge, they apply only once the earlier ones have split `word` as [`Self::segment`]
    /// says, so the tokenizer really produces the new token. Stops when the vocabulary is full.
    fn word(&mut self, word: &str) {
        let Some(mut parts) = self.segment(word) else {
            return;
        };
        while parts.len() > 1 && !self.full() {
            let (l, r) = (parts[0], parts[1]);
            let left = &self.v.tokens[l as usize];
            let right = &self.v.tokens[r as usize];
            let merged = format!("{left}{right}");
            // the result may already be a token (made from another pair): only the merge is new
            let Some(id) = self.token(&merged) else {
                return;
            };
            let pair = (
                self.v.tokens[l as usize].clone(),
                self.v.tokens[r as usize].clone(),
            );
            self.ranks.insert((l, r), self.v.merges.len());
            self.v.merges.push(pair);
            parts[0] = id;
            parts.remove(1);
        }
    }
}

/// The vocabulary and merges of an `n`-token tokenizer (`n >= MIN_HF_VOCAB`, else `None`).
pub fn build(n: usize) -> Option<BpeVocab> {
    if n < MIN_HF_VOCAB {
        return None;
    }
    let mut b = Builder {
        v: BpeVocab {
            tokens: Vec::with_capacity(n),
            merges: Vec::with_capacity(n.saturating_sub(MIN_HF_VOCAB)),
        },
        ids: HashMap::with_capacity(n),
        ranks: HashMap::with_capacity(n),
        n,
    };
    for t in SPECIALS {
        b.token(t);
    }
    for byte in 0..=255u8 {
        b.token(&format!("<0x{byte:02X}>"));
    }
    b.token(SPACE);
    for c in ('!'..='~').chain(LATIN1.chars()).chain(CJK_FIRST.chars()) {
        b.token(c.encode_utf8(&mut [0; 4]));
    }
    for w in WORDS {
        b.word(&format!("{SPACE}{w}"));
        b.word(w);
        let mut cap = w.chars();
        if let Some(first) = cap.next() {
            b.word(&format!(
                "{SPACE}{}{}",
                first.to_ascii_uppercase(),
                cap.as_str()
            ));
        }
    }
    for w in CJK_WORDS {
        b.word(w);
    }
    for c in CJK_MORE.chars() {
        b.token(c.encode_utf8(&mut [0; 4]));
    }
    // Lowercase strings by length: level L adds "▁" + each L-letter string, then each
    // (L+1)-letter string.
    let mut level = 1u32;
    let mut s = String::new();
    while !b.full() {
        for with_space in [true, false] {
            let len = if with_space { level } else { level + 1 };
            for k in 0..26u64.pow(len) {
                if b.full() {
                    break;
                }
                s.clear();
                if with_space {
                    s.push_str(SPACE);
                }
                let start = s.len();
                let mut x = k;
                for _ in 0..len {
                    s.insert(start, (b'a' + (x % 26) as u8) as char);
                    x /= 26;
                }
                if !b.has(&s) {
                    b.word(&s);
                }
            }
        }
        level += 1;
    }
    debug_assert_eq!(b.v.tokens.len(), n);
    Some(b.v)
}

/// Serializes the vocabulary as a JSON object in id order (`{"<unk>": 0, …}`).
struct OrderedVocab<'a>(&'a [String]);

impl Serialize for OrderedVocab<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().enumerate().map(|(i, t)| (t, i)))
    }
}

#[derive(Serialize)]
struct AddedToken {
    id: u32,
    content: &'static str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum PreTokenizer {
    Sequence {
        pretokenizers: Vec<PreTokenizer>,
    },
    Metaspace {
        replacement: &'static str,
        prepend_scheme: &'static str,
        split: bool,
    },
    Digits {
        individual_digits: bool,
    },
    Split {
        pattern: Pattern,
        behavior: &'static str,
        invert: bool,
    },
}

#[derive(Serialize)]
enum Pattern {
    Regex(&'static str),
    String(&'static str),
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Decoder {
    Sequence {
        decoders: Vec<Decoder>,
    },
    Replace {
        pattern: Pattern,
        content: &'static str,
    },
    ByteFallback,
    Fuse,
}

#[derive(Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    dropout: Option<f32>,
    unk_token: &'static str,
    continuing_subword_prefix: Option<&'static str>,
    end_of_word_suffix: Option<&'static str>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: OrderedVocab<'a>,
    merges: &'a [(String, String)],
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken>,
    normalizer: Option<()>,
    pre_tokenizer: PreTokenizer,
    post_processor: Option<()>,
    decoder: Decoder,
    model: BpeModel<'a>,
}

/// `tokenizer.json` for `v` (pretty-printed like the `tokenizers` library saves it).
pub fn tokenizer_json(v: &BpeVocab) -> String {
    let special_ids = [UNK_ID, PAD_ID, BOS_ID, EOS_ID];
    let t = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: special_ids
            .iter()
            .map(|&id| AddedToken {
                id,
                content: SPECIALS[id as usize],
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: false,
                special: true,
            })
            .collect(),
        normalizer: None,
        pre_tokenizer: PreTokenizer::Sequence {
            pretokenizers: vec![
                PreTokenizer::Metaspace {
                    replacement: SPACE,
                    prepend_scheme: "never",
                    split: true,
                },
                PreTokenizer::Digits {
                    individual_digits: true,
                },
                PreTokenizer::Split {
                    pattern: Pattern::Regex("\\p{P}"),
                    behavior: "Isolated",
                    invert: false,
                },
            ],
        },
        post_processor: None,
        decoder: Decoder::Sequence {
            decoders: vec![
                Decoder::Replace {
                    pattern: Pattern::String(SPACE),
                    content: " ",
                },
                Decoder::ByteFallback,
                Decoder::Fuse,
            ],
        },
        model: BpeModel {
            ty: "BPE",
            dropout: None,
            unk_token: SPECIALS[UNK_ID as usize],
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: true,
            ignore_merges: false,
            vocab: OrderedVocab(&v.tokens),
            merges: &v.merges,
        },
    };
    serde_json::to_string_pretty(&t).expect("the tokenizer serializes")
}

/// `tokenizer_config.json`, like XVERSE's (`PreTrainedTokenizerFast`, no BOS added).
pub fn tokenizer_config_json(model_max_length: usize) -> String {
    let v = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIALS[BOS_ID as usize],
        "eos_token": SPECIALS[EOS_ID as usize],
        "pad_token": SPECIALS[PAD_ID as usize],
        "unk_token": SPECIALS[UNK_ID as usize],
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": false,
    });
    serde_json::to_string_pretty(&v).expect("json")
}

/// `special_tokens_map.json`.
pub fn special_tokens_map_json() -> String {
    let v = serde_json::json!({
        "bos_token": SPECIALS[BOS_ID as usize],
        "eos_token": SPECIALS[EOS_ID as usize],
        "pad_token": SPECIALS[PAD_ID as usize],
        "unk_token": SPECIALS[UNK_ID as usize],
    });
    serde_json::to_string_pretty(&v).expect("json")
}
