//! A synthetic llama-style (SentencePiece) vocabulary laid out like XVERSE's.
//!
//! * 0 `<unk>` (UNKNOWN), 1 `<pad>`, 2 `<|startoftext|>`, 3 `<|endoftext|>` (CONTROL);
//! * 4..260 `<0x00>`..`<0xFF>` (BYTE), so every text can be tokenized by byte fallback;
//! * then NORMAL pieces with decreasing scores: `▁`, printable ASCII, a few CJK characters, word
//!   pieces (`▁t`, `▁th`, `▁the`, …) and, when more are needed, lowercase letter strings.
//!
//! Every multi-character NORMAL piece is the concatenation of two earlier pieces, so llama.cpp's
//! special-token check (a multi-character token that cannot be split into two tokens must be a
//! special one) finds no mismatch.

use std::collections::HashSet;

/// SentencePiece / gguf token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Id of `<unk>`.
pub const UNK_ID: u32 = 0;
/// Id of `<pad>`.
pub const PAD_ID: u32 = 1;
/// Id of `<|startoftext|>` (bos).
pub const BOS_ID: u32 = 2;
/// Id of `<|endoftext|>` (eos).
pub const EOS_ID: u32 = 3;
/// Special tokens plus the 256 byte tokens: the smallest vocabulary.
pub const MIN_VOCAB: usize = 4 + 256;

/// The vocabulary as the three parallel arrays GGUF stores.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

const SPECIALS: [(&str, i32); 4] = [
    ("<unk>", token_type::UNKNOWN),
    ("<pad>", token_type::CONTROL),
    ("<|startoftext|>", token_type::CONTROL),
    ("<|endoftext|>", token_type::CONTROL),
];

/// Characters of the demo prompt and a few common ones.
const CJK: &str = "北京的景点故宫天坛万里长城等深圳你好世界中文是了人在有我这个们";
/// CJK punctuation, after the characters.
const CJK_PUNCT: &str = "：、。，！？";

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "model", "layer", "hello",
    "world", "token", "xverse", "llama", "license", "software", "program", "work", "copy",
];

/// Builds a vocabulary of exactly `n` unique tokens (`n >= MIN_VOCAB`, else `None`).
pub fn build(n: usize) -> Option<Vocab> {
    if n < MIN_VOCAB {
        return None;
    }
    let mut b = Builder {
        v: Vocab {
            tokens: Vec::with_capacity(n),
            scores: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
        },
        seen: HashSet::with_capacity(n),
        n,
        normals: 0,
    };
    for (t, ty) in SPECIALS {
        b.push(t.to_string(), 0.0, ty);
    }
    for byte in 0..=255u8 {
        b.push(format!("<0x{byte:02X}>"), 0.0, token_type::BYTE);
    }
    b.normal("▁");
    for c in '!'..='~' {
        b.normal(&c.to_string());
    }
    for c in CJK.chars().chain(CJK_PUNCT.chars()) {
        b.normal(&c.to_string());
    }
    for prefix in ["▁", ""] {
        for w in WORDS {
            let mut piece = String::from(prefix);
            for c in w.chars() {
                piece.push(c);
                if piece.chars().count() > 1 {
                    b.normal(&piece);
                }
            }
        }
    }
    // Lowercase strings by length: each one's prefix came before it.
    let mut len = 2u32;
    while b.v.tokens.len() < n {
        let count = 26u64.pow(len);
        for k in 0..count {
            if b.v.tokens.len() >= n {
                break;
            }
            let mut s = String::with_capacity(len as usize);
            let mut x = k;
            let mut chars = Vec::with_capacity(len as usize);
            for _ in 0..len {
                chars.push((b'a' + (x % 26) as u8) as char);
                x /= 26;
            }
            s.extend(chars.iter().rev());
            b.normal(&s);
        }
        len += 1;
    }
    Some(b.v)
}

struct Builder {
    v: Vocab,
    seen: HashSet<String>,
    n: usize,
    normals: usize,
}

impl Builder {
    fn push(&mut self, t: String, score: f32, ty: i32) {
        if self.v.tokens.len() < self.n && self.seen.insert(t.clone()) {
            self.v.tokens.push(t);
            self.v.scores.push(score);
            self.v.types.push(ty);
        }
    }

    fn normal(&mut self, t: &str) {
        let before = self.v.tokens.len();
        self.push(t.to_string(), -(self.normals as f32), token_type::NORMAL);
        if self.v.tokens.len() > before {
            self.normals += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_uniqueness() {
        for n in [MIN_VOCAB, 261, 512, 1000, 5000, 100_534] {
            let v = build(n).unwrap();
            assert_eq!(v.tokens.len(), n);
            assert_eq!(v.scores.len(), n);
            assert_eq!(v.types.len(), n);
            let set: HashSet<&String> = v.tokens.iter().collect();
            assert_eq!(set.len(), n, "tokens are unique");
            assert_eq!(v.tokens[0], "<unk>");
            assert_eq!(v.types[0], token_type::UNKNOWN);
            assert_eq!(v.tokens[BOS_ID as usize], "<|startoftext|>");
            assert_eq!(v.tokens[EOS_ID as usize], "<|endoftext|>");
            assert_eq!(v.tokens[PAD_ID as usize], "<pad>");
            assert_eq!(&v.types[1..4], &[token_type::CONTROL; 3]);
            assert_eq!(v.tokens[4], "<0x00>");
            assert_eq!(v.tokens[4 + 10], "<0x0A>");
            assert_eq!(v.tokens[259], "<0xFF>");
            assert!(v.types[4..260].iter().all(|&t| t == token_type::BYTE));
            assert!(v.types[260..].iter().all(|&t| t == token_type::NORMAL));
            assert!(v.tokens.iter().all(|t| !t.is_empty()));
            // NORMAL scores strictly decrease
            assert!(v.scores[260..].windows(2).all(|w| w[0] > w[1]));
        }
        assert!(build(MIN_VOCAB - 1).is_none());
    }

    #[test]
    fn multi_char_pieces_split_into_two_tokens() {
        let v = build(3000).unwrap();
        let set: HashSet<&str> = v.tokens.iter().map(|s| s.as_str()).collect();
        for (t, &ty) in v.tokens.iter().zip(&v.types) {
            if ty != token_type::NORMAL || t.chars().count() < 2 {
                continue;
            }
            let ok = t
                .char_indices()
                .skip(1)
                .any(|(i, _)| set.contains(&t[..i]) && set.contains(&t[i..]));
            assert!(ok, "{t:?} is not the concatenation of two tokens");
        }
        assert!(set.contains("▁the"));
        assert!(set.contains("北"));
    }

    #[test]
    fn deterministic() {
        assert_eq!(build(777), build(777));
    }
}
