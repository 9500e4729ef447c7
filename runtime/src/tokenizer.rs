//! Text to token ids and back, from the tokenizer a GGUF file carries.
//!
//! Two sources, in this order:
//!
//! 1. `tokenizer.huggingface.json` (our converter embeds the original `tokenizer.json`): loaded
//!    with the `tokenizers` crate, which *is* Hugging Face's tokenizer, so ids equal
//!    `AutoTokenizer`'s (`add_special_tokens=False`) exactly. BOS is added only when
//!    `tokenizer.ggml.add_bos_token` is true (XVERSE's tokenizer adds nothing).
//! 2. Otherwise `tokenizer.ggml.*` (files made by llama.cpp's converter), tokenized the way
//!    llama.cpp b2757 tokenizes an SPM (`tokenizer.ggml.model = "llama"`) vocabulary:
//!    * control/user-defined tokens written in the text are matched first (llama.cpp's
//!      `parse_special`), the text between them is tokenized on its own;
//!    * a space is put before the first text fragment when `tokenizer.ggml.add_space_prefix`
//!      is true or absent (llama.cpp's default), and spaces become `▁`;
//!    * characters are merged pairwise, always the pair whose merged piece has the highest
//!      `tokenizer.ggml.scores` value first (leftmost pair on ties; a file without scores
//!      gives every piece 0), as long as the merged text is a vocabulary entry;
//!    * a character that is not in the vocabulary becomes its UTF-8 bytes as `<0xNN>` tokens;
//!    * BOS is added unless `tokenizer.ggml.add_bos_token` is false (llama.cpp adds it when the
//!      key is absent), EOS only when `tokenizer.ggml.add_eos_token` is true.
//!
//! bos/eos ids come from `tokenizer.ggml.bos_token_id` / `eos_token_id`, XVERSE's 2 / 3 where
//! absent.
//!
//! [`StreamDecoder`] turns generated ids into text as they come without ever printing half a
//! UTF-8 character: each token contributes bytes (a `<0xNN>` token one byte), and only complete
//! characters leave the decoder.

use std::collections::{BinaryHeap, HashMap};

use xverse_quant::gguf::{Gguf, Value};

use crate::error::RuntimeError;

/// XVERSE's `<|startoftext|>`, used when the file names no bos token.
pub const XVERSE_BOS: u32 = 2;
/// XVERSE's `<|endoftext|>`, used when the file names no eos token.
pub const XVERSE_EOS: u32 = 3;

/// GGUF / SentencePiece token types (`tokenizer.ggml.token_type`); unused (5) tokens decode
/// to nothing.
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// A tokenizer read from a GGUF file.
pub struct Tokenizer {
    kind: Kind,
    bos: u32,
    eos: u32,
    add_bos: bool,
    add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field(
                "kind",
                &match self.kind {
                    Kind::Hf { .. } => "tokenizer.huggingface.json",
                    Kind::Spm(_) => "tokenizer.ggml (SPM)",
                },
            )
            .field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

enum Kind {
    Hf {
        tok: Box<tokenizers::Tokenizer>,
        /// Ids of the added tokens marked special (decoded as nothing).
        special: std::collections::HashSet<u32>,
    },
    Spm(Box<Spm>),
}

/// Which tokenizer a file's metadata selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `tokenizer.huggingface.json` through the `tokenizers` crate.
    HuggingFace,
    /// `tokenizer.ggml.*`, tokenized like llama.cpp's SPM tokenizer.
    Spm,
}

fn bad(g: &Gguf, msg: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::new(format!("{}: {msg}", g.name()))
}

/// An optional boolean key: `None` when absent, an error when present with another type.
fn opt_bool(g: &Gguf, key: &str) -> Result<Option<bool>, RuntimeError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(
            g,
            format!("{key} is a {}, expected a bool", v.value_type().name()),
        )),
    }
}

/// An optional token id key, checked against the vocabulary size.
fn opt_id(g: &Gguf, key: &str, default: u32, n_vocab: usize) -> Result<u32, RuntimeError> {
    let id = match g.get(key) {
        None => default,
        Some(v) => match v.as_u64().and_then(|x| u32::try_from(x).ok()) {
            Some(x) => x,
            None => return Err(bad(g, format!("{key} is not a token id: {v:?}"))),
        },
    };
    if id as usize >= n_vocab {
        return Err(bad(
            g,
            format!("{key} = {id} is outside the vocabulary of {n_vocab} tokens"),
        ));
    }
    Ok(id)
}

impl Tokenizer {
    /// The tokenizer of a GGUF file: `tokenizer.huggingface.json` when present, else the
    /// `tokenizer.ggml.*` vocabulary (see the module documentation).
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, RuntimeError> {
        if let Some(v) = g.get("tokenizer.huggingface.json") {
            let Some(json) = v.as_str() else {
                return Err(bad(
                    g,
                    format!(
                        "tokenizer.huggingface.json is a {}, expected a string",
                        v.value_type().name()
                    ),
                ));
            };
            let tok = crate::tokenizer_json::tokenizer(json).map_err(|e| {
                bad(
                    g,
                    format!("tokenizer.huggingface.json is not a valid tokenizer: {e}"),
                )
            })?;
            let n_vocab = tok.get_vocab_size(true);
            let bos = opt_id(g, "tokenizer.ggml.bos_token_id", XVERSE_BOS, n_vocab)?;
            let eos = opt_id(g, "tokenizer.ggml.eos_token_id", XVERSE_EOS, n_vocab)?;
            let add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token")?.unwrap_or(false);
            let add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
            return Ok(Tokenizer::hf(tok, bos, eos, add_bos, add_eos));
        }
        let spm = Spm::from_gguf(g)?;
        let n_vocab = spm.pieces.len();
        let bos = opt_id(g, "tokenizer.ggml.bos_token_id", XVERSE_BOS, n_vocab)?;
        let eos = opt_id(g, "tokenizer.ggml.eos_token_id", XVERSE_EOS, n_vocab)?;
        // llama.cpp: special_add_bos = -1 (absent) adds BOS for SPM; add_eos only when 1.
        let add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token")?.unwrap_or(true);
        let add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        Ok(Tokenizer {
            kind: Kind::Spm(Box::new(spm)),
            bos,
            eos,
            add_bos,
            add_eos,
        })
    }

    /// A tokenizer straight from a `tokenizer.json` text (bos 2, eos 3, no BOS added), for
    /// tools and tests that have no GGUF file.
    pub fn from_hf_json(json: &str) -> Result<Tokenizer, RuntimeError> {
        let tok = crate::tokenizer_json::tokenizer(json).map_err(|e| {
            RuntimeError::new(format!("tokenizer.json is not a valid tokenizer: {e}"))
        })?;
        Ok(Tokenizer::hf(tok, XVERSE_BOS, XVERSE_EOS, false, false))
    }

    fn hf(tok: tokenizers::Tokenizer, bos: u32, eos: u32, add_bos: bool, add_eos: bool) -> Self {
        let special = tok
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        Tokenizer {
            kind: Kind::Hf {
                tok: Box::new(tok),
                special,
            },
            bos,
            eos,
            add_bos,
            add_eos,
        }
    }

    /// Which of the two tokenizers this is.
    pub fn source(&self) -> Source {
        match self.kind {
            Kind::Hf { .. } => Source::HuggingFace,
            Kind::Spm(_) => Source::Spm,
        }
    }

    /// Token ids of `text`, with BOS (and EOS) when the file says so.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.encode_with(text, true)
    }

    /// Token ids of `text` with nothing added: one segment of a chat turn.
    pub fn encode_segment(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.encode_with(text, false)
    }

    /// Token ids of `text`; `add_special` adds BOS/EOS as the file says. Special tokens written
    /// in the text (`<|endoftext|>`…) are recognised, as Hugging Face and llama.cpp's `main` do.
    pub fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>, RuntimeError> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.push(self.bos);
        }
        match &self.kind {
            Kind::Hf { tok, .. } => {
                let enc = tok
                    .encode_fast(text, false)
                    .map_err(|e| RuntimeError::new(format!("tokenizer: {e}")))?;
                out.extend_from_slice(enc.get_ids());
            }
            Kind::Spm(spm) => spm.encode(text, &mut out)?,
        }
        if add_special && self.add_eos {
            out.push(self.eos);
        }
        Ok(out)
    }

    /// The text of `ids` (special and control tokens are left out; bytes that do not form UTF-8
    /// become U+FFFD). For a `tokenizer.huggingface.json` file this is Hugging Face's
    /// `decode(ids, skip_special_tokens=True)`; for an SPM vocabulary the concatenation of
    /// llama.cpp's pieces, without the space that `add_space_prefix` put in front.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, true)
    }

    /// [`Tokenizer::decode`], with the text of special/control tokens kept when
    /// `skip_special` is false (Hugging Face's `skip_special_tokens=False`, llama.cpp's
    /// `special = true`).
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> String {
        match &self.kind {
            Kind::Hf { tok, .. } => match tok.decode(ids, skip_special) {
                Ok(s) => s,
                Err(_) => {
                    // an id outside the vocabulary: decode the valid ones through the bytes
                    let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            },
            Kind::Spm(spm) => {
                let mut bytes: Vec<u8> = Vec::new();
                for &id in ids {
                    bytes.extend_from_slice(&spm.piece(id, !skip_special));
                }
                let s = String::from_utf8_lossy(&bytes).into_owned();
                match s.strip_prefix(' ') {
                    Some(rest) if spm.add_space_prefix => rest.to_string(),
                    _ => s,
                }
            }
        }
    }

    /// The bytes token `id` contributes to a text (nothing for special/control tokens and ids
    /// outside the vocabulary; one byte for a `<0xNN>` token).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match &self.kind {
            Kind::Hf { tok, special } => {
                if special.contains(&id) {
                    return Vec::new();
                }
                let Some(text) = tok.id_to_token(id) else {
                    return Vec::new();
                };
                if let Some(b) = parse_byte_token(&text) {
                    return vec![b];
                }
                tok.decode(&[id], false)
                    .map(String::into_bytes)
                    .unwrap_or_default()
            }
            Kind::Spm(spm) => spm.piece(id, false),
        }
    }

    /// The vocabulary entry of `id` as the file writes it (for `--verbose-prompt`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        match &self.kind {
            Kind::Hf { tok, .. } => tok.id_to_token(id),
            Kind::Spm(spm) => spm
                .pieces
                .get(id as usize)
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Tokens in the vocabulary (added tokens included).
    pub fn n_vocab(&self) -> usize {
        match &self.kind {
            Kind::Hf { tok, .. } => tok.get_vocab_size(true),
            Kind::Spm(spm) => spm.pieces.len(),
        }
    }

    /// The beginning-of-text token.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// The end-of-text token: generation stops when it is sampled.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Whether [`Tokenizer::encode`] puts BOS in front.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
}

/// `<0xNN>` (upper or lower case hex) → the byte.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// llama.cpp's `utf8_len`: the length of a UTF-8 sequence from its first byte (1 for a
/// continuation byte).
fn utf8_len(b: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(b >> 4) as usize]
}

/// An SPM vocabulary from `tokenizer.ggml.*`, tokenized like llama.cpp b2757.
struct Spm {
    /// Token texts as stored (with `▁` for spaces).
    pieces: Vec<Vec<u8>>,
    scores: Vec<f32>,
    types: Vec<i32>,
    /// Text → id; a text written twice maps to its last id, as in llama.cpp's map.
    to_id: HashMap<Vec<u8>, u32>,
    /// Tokens matched in the raw text before tokenizing (llama.cpp's special token cache),
    /// longest first.
    specials: Vec<(Vec<u8>, u32)>,
    /// Token of each byte for the byte fallback (`<0xNN>`, else the one-byte text).
    byte_ids: [Option<u32>; 256],
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols, ordered like llama.cpp's `llm_bigram_spm`
/// queue: higher score first, then the leftmost.
#[derive(Clone, Copy, Debug)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A symbol of the SPM merge: a byte range of the text and its neighbours.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    fn from_gguf(g: &Gguf) -> Result<Spm, RuntimeError> {
        match g.get("tokenizer.ggml.model") {
            None => {}
            Some(v) => match v.as_str() {
                Some("llama") => {}
                Some(other) => {
                    return Err(bad(
                        g,
                        format!(
                        "tokenizer.ggml.model is \"{other}\": only SPM (\"llama\") vocabularies \
                             and tokenizer.huggingface.json are supported"
                    ),
                    ))
                }
                None => return Err(bad(g, "tokenizer.ggml.model is not a string")),
            },
        }
        if g.get("tokenizer.ggml.tokens").is_none() {
            return Err(bad(
                g,
                "the file has no tokenizer (neither tokenizer.huggingface.json nor tokenizer.ggml.tokens)",
            ));
        }
        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 {
            return Err(bad(g, "tokenizer.ggml.tokens is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(bad(g, "tokenizer.ggml.tokens has too many entries"));
        }
        let scores = match g.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(_) => g.get_f32_array("tokenizer.ggml.scores")?,
        };
        let types = match g.get("tokenizer.ggml.token_type") {
            None => vec![token_type::NORMAL; n],
            Some(_) => g.get_i32_array("tokenizer.ggml.token_type")?,
        };
        if scores.len() != n || types.len() != n {
            return Err(bad(
                g,
                format!(
                    "tokenizer.ggml.tokens has {n} entries but scores {} and token_type {}",
                    scores.len(),
                    types.len()
                ),
            ));
        }
        let pieces: Vec<Vec<u8>> = tokens.iter().map(|t| t.as_bytes().to_vec()).collect();
        if let Some(i) = pieces.iter().position(|p| p.is_empty()) {
            return Err(bad(g, format!("tokenizer.ggml.tokens[{i}] is empty")));
        }
        let mut to_id = HashMap::with_capacity(n);
        for (i, p) in pieces.iter().enumerate() {
            to_id.insert(p.clone(), i as u32);
        }
        let specials = special_tokens(&to_id);
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = to_id
                .get(hex.as_bytes())
                .or_else(|| to_id.get(&[b as u8][..]))
                .copied();
        }
        let add_space_prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        Ok(Spm {
            pieces,
            scores,
            types,
            to_id,
            specials,
            byte_ids,
            add_space_prefix,
        })
    }

    /// llama.cpp's `llama_tokenize_internal` for an SPM vocabulary, `parse_special` on,
    /// without the BOS/EOS (added by the caller).
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), RuntimeError> {
        if text.is_empty() {
            return Ok(());
        }
        // Split out the special tokens: each in turn, in every raw fragment, leftmost first.
        enum Frag {
            Raw(usize, usize),
            Token(u32),
        }
        let bytes = text.as_bytes();
        let mut frags = vec![Frag::Raw(0, bytes.len())];
        for (st, id) in &self.specials {
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Frag::Token(_) => next.push(f),
                    Frag::Raw(mut start, end) => {
                        while let Some(pos) = find(&bytes[start..end], st) {
                            if pos > 0 {
                                next.push(Frag::Raw(start, start + pos));
                            }
                            next.push(Frag::Token(*id));
                            start += pos + st.len();
                        }
                        if start < end {
                            next.push(Frag::Raw(start, end));
                        }
                    }
                }
            }
            frags = next;
        }
        for (i, f) in frags.iter().enumerate() {
            match *f {
                Frag::Token(id) => out.push(id),
                Frag::Raw(start, end) => {
                    // special tokens are UTF-8, so fragment boundaries are character boundaries
                    let raw = text.get(start..end).unwrap_or_default();
                    let mut s = String::with_capacity(raw.len() + 3);
                    if i == 0 && self.add_space_prefix {
                        s.push(' ');
                    }
                    s.push_str(raw);
                    let escaped = s.replace(' ', "\u{2581}");
                    self.tokenize(&escaped, out)?;
                }
            }
        }
        Ok(())
    }

    /// llama.cpp's `llm_tokenizer_spm::tokenize` on an escaped fragment.
    fn tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<(), RuntimeError> {
        let b = text.as_bytes();
        let mut symbols: Vec<Symbol> = Vec::with_capacity(b.len());
        let mut offs = 0;
        while offs < b.len() {
            let len = utf8_len(b[offs]).min(b.len() - offs);
            let idx = symbols.len();
            symbols.push(Symbol {
                start: offs,
                len,
                prev: idx.checked_sub(1),
                next: if offs + len == b.len() {
                    None
                } else {
                    Some(idx + 1)
                },
            });
            offs += len;
        }
        let mut queue = BinaryHeap::new();
        let try_add = |symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>,
                       l: Option<usize>,
                       r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let (a, c) = (symbols[l], symbols[r]);
            let piece = &b[a.start..a.start + a.len + c.len];
            if let Some(&id) = self.to_id.get(piece) {
                queue.push(Bigram {
                    left: l,
                    right: r,
                    score: self.scores[id as usize],
                    size: piece.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            // one of them was merged since: stale entry
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            let prev = symbols[bg.left].prev;
            let next = symbols[bg.left].next;
            try_add(&symbols, &mut queue, prev, Some(bg.left));
            try_add(&symbols, &mut queue, Some(bg.left), next);
        }
        // Every merged symbol is a vocabulary entry (a merge needs one); a single character
        // may not be, and then goes out as bytes. (llama.cpp's `rev_merge` re-segmentation
        // only applies to texts that are not valid UTF-8, which a `&str` never is.)
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &b[s.start..s.start + s.len];
            if let Some(&id) = self.to_id.get(piece) {
                out.push(id);
            } else {
                for &byte in piece {
                    match self.byte_ids[byte as usize] {
                        Some(id) => out.push(id),
                        None => {
                            return Err(RuntimeError::new(format!(
                                "tokenizer: the vocabulary has no token for byte 0x{byte:02X} \
                                 (no <0x{byte:02X}> entry)"
                            )))
                        }
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// llama.cpp's `llama_token_to_piece(…, special)`.
    fn piece(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(p) = self.pieces.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            token_type::NORMAL => {
                let s = String::from_utf8_lossy(p);
                s.replace('\u{2581}', " ").into_bytes()
            }
            token_type::USER_DEFINED => p.clone(),
            token_type::CONTROL if special => p.clone(),
            token_type::UNKNOWN => "\u{2585}".as_bytes().to_vec(),
            token_type::BYTE => std::str::from_utf8(p)
                .ok()
                .and_then(|t| t.get(3..5))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| vec![b])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// llama.cpp's special token cache: every entry of more than one character that cannot be
/// split into two vocabulary entries (checking split points after a single-byte character or a
/// continuation byte, as llama.cpp does). Sorted longest first, then by id, so that overlapping
/// specials resolve the same way every run (llama.cpp iterates a hash map).
fn special_tokens(to_id: &HashMap<Vec<u8>, u32>) -> Vec<(Vec<u8>, u32)> {
    let mut out = Vec::new();
    for (tok, &id) in to_id {
        if tok.len() <= 1 {
            continue;
        }
        let mut tokenizable = false;
        let mut i = 1;
        while i < tok.len() {
            let utf = utf8_len(tok[i - 1]);
            if utf == 1 {
                if to_id.contains_key(&tok[..i]) && to_id.contains_key(&tok[i..]) {
                    tokenizable = true;
                    break;
                }
                i += 1;
            } else {
                i += utf - 1;
            }
        }
        if tokenizable {
            continue;
        }
        let mut chars = 0;
        let mut k = 0;
        while k < tok.len() {
            chars += 1;
            k += utf8_len(tok[k]);
        }
        if chars > 1 {
            out.push((tok.clone(), id));
        }
    }
    out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    out
}

/// Streaming detokenization: push generated ids, get text that never ends in the middle of a
/// UTF-8 character. Bytes of `<0xNN>` tokens accumulate until they form a character; bytes that
/// can never form one come out as U+FFFD.
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    pending: Vec<u8>,
}

impl std::fmt::Debug for StreamDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("pending", &self.pending)
            .finish()
    }
}

impl<'t> StreamDecoder<'t> {
    /// A decoder with nothing pending.
    pub fn new(tok: &'t Tokenizer) -> Self {
        StreamDecoder {
            tok,
            pending: Vec::new(),
        }
    }

    /// Adds token `id`; returns the complete characters now available, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        let bytes = self.tok.token_bytes(id);
        self.push_bytes(&bytes)
    }

    /// Adds raw bytes; returns the complete characters now available, if any.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // an incomplete character at the end: wait for more bytes
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        // bytes that no continuation can make valid
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Bytes still waiting for the rest of their character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: whatever is pending, with U+FFFD for an incomplete character.
    pub fn flush(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_token_names() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("0x41"), None);
    }

    #[test]
    fn bigram_order_is_score_then_leftmost() {
        let mut q = BinaryHeap::new();
        for (left, score) in [(3, 1.0), (1, 1.0), (2, 2.0), (0, -1.0)] {
            q.push(Bigram {
                left,
                right: left + 1,
                score,
                size: 2,
            });
        }
        let order: Vec<usize> = std::iter::from_fn(|| q.pop().map(|b| b.left)).collect();
        assert_eq!(order, vec![2, 1, 3, 0]);
    }
}
