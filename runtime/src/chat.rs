//! `xverse-run --chat`: interactive turns in XVERSE's chat format.
//!
//! As the official `modeling_xverse.py` builds a conversation, with no BOS anywhere:
//!
//! ```text
//! [Human: {system}\n]                       optional system text, sent first
//! Human: {text}\n\nAssistant: {reply}<eos>  one turn
//! ```
//!
//! Each segment is encoded on its own (`Human: {system}\n` once; `Human: {text}\n\nAssistant: `
//! per turn, the reply being the generated tokens) and the history stays in the KV cache
//! between turns: a turn evaluates only its own tokens. A reply ends at eos; one cut short by
//! `-n` or a full context is closed with an eos all the same.
//!
//! When a turn (or a reply in progress) no longer fits the context, the oldest turns are
//! dropped, the kept history (system text, later turns, the current one) is evaluated again at
//! its new positions, and stderr says so. A message that does not fit the context even alone
//! is refused with one line, and the chat goes on.

use std::io::{BufRead, Write};

use crate::error::RuntimeError;
use crate::session::{Session, Stop};

/// What became of one turn.
#[derive(Clone, Debug, PartialEq)]
pub enum Turn {
    /// The model replied (the reply's tokens, eos not included).
    Replied { tokens: Vec<u32>, stop: Stop },
    /// The message was refused (too long for the context); the reason went to stderr.
    Refused,
    /// The output was closed: the chat ends.
    Closed,
}

/// A conversation over a [`Session`].
pub struct Chat<'s, 'a> {
    session: &'s mut Session<'a>,
    /// The conversation as kept: the cache's tokens plus the tail not evaluated yet (the last
    /// reply's final token and its closing eos).
    tokens: Vec<u32>,
    /// Length of the system segment at the start of `tokens`.
    sys_len: usize,
    /// Where each kept turn starts in `tokens`.
    turn_starts: Vec<usize>,
    /// Token limit per reply.
    limit: Option<usize>,
}

impl std::fmt::Debug for Chat<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("tokens", &self.tokens.len())
            .field("sys_len", &self.sys_len)
            .field("turns", &self.turn_starts.len())
            .finish()
    }
}

/// The segment of a user message: `Human: {text}\n\nAssistant: `.
pub fn user_segment(text: &str) -> String {
    format!("Human: {text}\n\nAssistant: ")
}

/// The segment of a system text: `Human: {system}\n`.
pub fn system_segment(system: &str) -> String {
    format!("Human: {system}\n")
}

fn note(err: &mut dyn Write, msg: &str) {
    // stderr going away is no reason to stop the chat
    let _ = writeln!(err, "xverse-run: {msg}");
}

/// Drops the oldest turns except the last `protect` ones until `len + reserve` fits `n_ctx`.
/// Returns how many turns and tokens were dropped and the new token list.
fn drop_oldest(
    tokens: &[u32],
    sys_len: usize,
    turn_starts: &mut Vec<usize>,
    protect: usize,
    reserve: usize,
    n_ctx: usize,
) -> Option<(usize, usize, Vec<u32>)> {
    let droppable = turn_starts.len().saturating_sub(protect);
    let first = *turn_starts.first()?;
    if droppable == 0 {
        return None;
    }
    let end_of = |k: usize| turn_starts.get(k).copied().unwrap_or(tokens.len());
    let mut k = 0;
    while k < droppable {
        k += 1;
        if tokens.len() - (end_of(k) - first) + reserve <= n_ctx {
            break;
        }
    }
    let from = end_of(k);
    let dropped = from - first;
    let mut kept = tokens[..sys_len.min(tokens.len())].to_vec();
    kept.extend_from_slice(&tokens[from..]);
    *turn_starts = turn_starts[k..].iter().map(|&s| s - dropped).collect();
    Some((k, dropped, kept))
}

impl<'s, 'a> Chat<'s, 'a> {
    /// Starts a chat on `session` (its cache is cleared), evaluating the system segment if any.
    /// `limit` caps each reply (`None`: until eos).
    pub fn new(
        session: &'s mut Session<'a>,
        system: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Chat<'s, 'a>, RuntimeError> {
        session.rewind(0);
        let mut tokens = Vec::new();
        if let Some(sys) = system {
            tokens = session.tokenizer().encode_segment(&system_segment(sys))?;
            let n_ctx = session.n_ctx();
            if tokens.len() + 2 > n_ctx {
                return Err(RuntimeError::new(format!(
                    "the system text is {} tokens, too long for the context of {n_ctx} (raise -c)",
                    tokens.len()
                )));
            }
            session.eval_prompt(&tokens)?;
        }
        Ok(Chat {
            session,
            sys_len: tokens.len(),
            tokens,
            turn_starts: Vec::new(),
            limit,
        })
    }

    /// The session under the chat.
    pub fn session(&self) -> &Session<'a> {
        self.session
    }

    /// Turns kept in the context.
    pub fn turns(&self) -> usize {
        self.turn_starts.len()
    }

    /// The conversation's tokens as kept (see the type's fields).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Room to keep free for a reply when making space: `-n` or a quarter of the context.
    fn reserve(&self) -> usize {
        let n_ctx = self.session.n_ctx();
        self.limit.unwrap_or(n_ctx / 4).min(n_ctx / 4).max(1)
    }

    /// One turn: the user's `text`, the streamed reply to `out`, notes to `err`.
    pub fn turn(
        &mut self,
        text: &str,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Turn, RuntimeError> {
        let n_ctx = self.session.n_ctx();
        let ids = self
            .session
            .tokenizer()
            .encode_segment(&user_segment(text))?;
        if self.sys_len + ids.len() + 1 > n_ctx {
            note(
                err,
                &format!(
                    "error: the message is {} tokens{}, too long for the context of {n_ctx} (raise -c); it was not sent",
                    ids.len(),
                    if self.sys_len > 0 {
                        format!(" (+ {} of system text)", self.sys_len)
                    } else {
                        String::new()
                    }
                ),
            );
            return Ok(Turn::Refused);
        }
        self.turn_starts.push(self.tokens.len());
        self.tokens.extend_from_slice(&ids);
        let reserve = self.reserve();
        if self.tokens.len() + reserve > n_ctx {
            let before = self.tokens.len();
            if let Some((turns, dropped, kept)) = drop_oldest(
                &self.tokens,
                self.sys_len,
                &mut self.turn_starts,
                1,
                reserve,
                n_ctx,
            ) {
                self.tokens = kept;
                note(
                    err,
                    &format!(
                        "context full ({before} of {n_ctx} tokens): dropped the oldest {turns} turn(s), {dropped} tokens; re-evaluating the {} kept",
                        self.tokens.len()
                    ),
                );
            }
        }
        // evaluate what the cache lacks: the new segment, or everything after the system
        // text when turns were dropped
        let hist = self.session.history();
        let common = hist
            .iter()
            .zip(&self.tokens)
            .take_while(|(a, b)| a == b)
            .count();
        self.session.rewind(common);
        let logits = self.session.eval_prompt(&self.tokens[common..])?;

        let Chat {
            session,
            sys_len,
            turn_starts,
            limit,
            ..
        } = self;
        let sys_len = *sys_len;
        let mut on_full = |s: &mut Session<'a>| -> Result<bool, RuntimeError> {
            let now = s.history().to_vec();
            let Some((turns, dropped, kept)) =
                drop_oldest(&now, sys_len, turn_starts, 1, reserve, n_ctx)
            else {
                note(
                    err,
                    &format!("context full ({n_ctx} tokens) and no older turn to drop: the reply stops here"),
                );
                return Ok(false);
            };
            note(
                err,
                &format!(
                    "context full ({n_ctx} tokens): dropped the oldest {turns} turn(s), {dropped} tokens; re-evaluating the {} kept",
                    kept.len()
                ),
            );
            s.rewind(sys_len);
            s.eval_prompt(&kept[sys_len..])?;
            Ok(true)
        };
        let g = session.generate(logits, *limit, out, &mut on_full)?;
        // the conversation: the cache, the reply's last token if not evaluated, and the eos
        // that closes the reply
        let eos = session.tokenizer().eos();
        let mut tokens = session.history().to_vec();
        if let Some(t) = g.unevaluated {
            if t != eos {
                tokens.push(t);
            }
        }
        tokens.push(eos);
        self.tokens = tokens;
        if g.stop == Stop::OutputClosed {
            return Ok(Turn::Closed);
        }
        if out.write_all(b"\n").and_then(|()| out.flush()).is_err() {
            return Ok(Turn::Closed);
        }
        Ok(Turn::Replied {
            tokens: g.tokens,
            stop: g.stop,
        })
    }

    /// Reads one message per line from `input` until its end (Ctrl-D) and answers each.
    /// `marker`: print `> ` before each message (for a terminal).
    pub fn run(
        &mut self,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        err: &mut dyn Write,
        marker: bool,
    ) -> Result<(), RuntimeError> {
        let mut line = String::new();
        loop {
            if marker {
                let _ = out.write_all(b"> ").and_then(|()| out.flush());
            }
            line.clear();
            let n = input
                .read_line(&mut line)
                .map_err(|e| RuntimeError::new(format!("cannot read the input: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            if self.turn(text, out, err)? == Turn::Closed {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_match_the_official_format() {
        assert_eq!(user_segment("你好"), "Human: 你好\n\nAssistant: ");
        assert_eq!(system_segment("Be brief."), "Human: Be brief.\n");
    }

    #[test]
    fn dropping_keeps_the_system_text_and_the_newest_turns() {
        // system [9, 9], turns at 2 (len 3), 5 (len 4), 9 (len 2)
        let tokens: Vec<u32> = vec![9, 9, 1, 1, 1, 2, 2, 2, 2, 3, 3];
        let mut starts = vec![2, 5, 9];
        // need 11 - 3 + 2 = 10 <= 10: drops one turn
        let (turns, dropped, kept) = drop_oldest(&tokens, 2, &mut starts, 1, 2, 10).unwrap();
        assert_eq!((turns, dropped), (1, 3));
        assert_eq!(kept, vec![9, 9, 2, 2, 2, 2, 3, 3]);
        assert_eq!(starts, vec![2, 6]);
        // nothing droppable when only the protected turn is left
        let mut one = vec![2];
        assert!(drop_oldest(&[9, 9, 1], 2, &mut one, 1, 1, 3).is_none());
    }

    #[test]
    fn dropping_goes_as_far_as_needed() {
        let tokens: Vec<u32> = vec![1, 1, 2, 2, 3, 3];
        let mut starts = vec![0, 2, 4];
        let (turns, dropped, kept) = drop_oldest(&tokens, 0, &mut starts, 1, 3, 5).unwrap();
        assert_eq!((turns, dropped), (2, 4));
        assert_eq!(kept, vec![3, 3]);
        assert_eq!(starts, vec![0]);
    }
}
