//! Sessions and chat through the library, on a tiny model: the generation loop agrees with a
//! plain greedy loop over the engine, and a chat keeps its history in the KV cache in
//! XVERSE's format.

mod common;

use xverse_models::TinySpec;
use xverse_runtime::chat::{system_segment, user_segment, Chat, Turn};
use xverse_runtime::engine::{Engine, EngineConfig};
use xverse_runtime::model::Model;
use xverse_runtime::sampler::{argmax, Sampler, SamplerConfig};
use xverse_runtime::session::{Session, Stop};
use xverse_runtime::tokenizer::Tokenizer;

fn greedy() -> SamplerConfig {
    SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    }
}

fn engine(model: &Model, n_ctx: usize) -> Engine<'_> {
    Engine::new(
        model,
        EngineConfig {
            n_ctx,
            threads: 1,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn greedy_generation_equals_a_plain_argmax_loop() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &TinySpec::default());
    let model = Model::load(&p).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let prompt = tok.encode("the model has").unwrap();

    // by hand
    let mut e = engine(&model, 64);
    let mut logits = e.eval(&prompt, false).unwrap();
    let mut want = Vec::new();
    for _ in 0..10 {
        let id = argmax(&logits);
        want.push(id);
        logits = e.eval(&[id], false).unwrap();
    }

    let mut s = Session::new(engine(&model, 64), &tok, Sampler::new(greedy()));
    s.ignore_eos = true;
    let mut out = Vec::new();
    let g = s.complete(&prompt, Some(10), &mut out).unwrap();
    assert_eq!(g.tokens, want);
    assert_eq!(g.stop, Stop::Limit);
    assert_eq!(String::from_utf8(out).unwrap(), tok.decode(&want));
    // the last token is sampled but not evaluated
    assert_eq!(s.n_past(), prompt.len() + 9);
    assert_eq!(g.unevaluated, Some(want[9]));
    assert_eq!(s.timings.gen_tokens, 10);
    assert_eq!(s.timings.prompt_tokens, prompt.len());
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &TinySpec::default());
    let model = Model::load(&p).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let mut s = Session::new(engine(&model, 8), &tok, Sampler::new(greedy()));
    let e = s
        .complete(&[5; 9], Some(1), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("longer than the context of 8"), "{e}");
}

#[test]
fn chat_history_is_the_xverse_format_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &TinySpec::default());
    let model = Model::load(&p).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let eos = tok.eos();
    let mut s = Session::new(engine(&model, 512), &tok, Sampler::new(greedy()));
    s.ignore_eos = true;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut chat = Chat::new(&mut s, Some("be brief"), Some(5)).unwrap();
    let r1 = match chat.turn("hello", &mut out, &mut err).unwrap() {
        Turn::Replied { tokens, stop } => {
            assert_eq!(stop, Stop::Limit);
            tokens
        }
        t => panic!("{t:?}"),
    };
    let r2 = match chat.turn("and the model?", &mut out, &mut err).unwrap() {
        Turn::Replied { tokens, .. } => tokens,
        t => panic!("{t:?}"),
    };
    // each segment encoded on its own, no BOS, replies closed by eos
    let mut want = tok.encode_segment(&system_segment("be brief")).unwrap();
    want.extend(tok.encode_segment(&user_segment("hello")).unwrap());
    want.extend(&r1);
    want.push(eos);
    want.extend(tok.encode_segment(&user_segment("and the model?")).unwrap());
    want.extend(&r2);
    want.push(eos);
    assert_eq!(chat.tokens(), &want[..]);
    assert_eq!(chat.turns(), 2);
    assert!(!want.contains(&tok.bos()));
    // everything but the last reply's final token and eos is in the cache, evaluated once
    drop(chat);
    assert_eq!(s.history(), &want[..want.len() - 2]);
    assert_eq!(s.timings.prompt_tokens, want.len() - 2 - 8);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    // the replies went to the output, each followed by a newline
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text, format!("{}\n{}\n", tok.decode(&r1), tok.decode(&r2)));
}

#[test]
fn chat_drops_the_oldest_turns_when_full_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &TinySpec::default());
    let model = Model::load(&p).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let n_ctx = 96;
    let mut s = Session::new(engine(&model, n_ctx), &tok, Sampler::new(greedy()));
    s.ignore_eos = true;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let sys = tok.encode_segment(&system_segment("sys")).unwrap();
    let mut chat = Chat::new(&mut s, Some("sys"), Some(10)).unwrap();
    for i in 0..6 {
        let t = chat
            .turn(&format!("message number {i}"), &mut out, &mut err)
            .unwrap();
        assert!(matches!(t, Turn::Replied { .. }), "{t:?}");
        assert!(chat.tokens().len() <= n_ctx + 2);
        // the system text always stays in front
        assert_eq!(&chat.tokens()[..sys.len()], &sys[..]);
    }
    assert!(chat.turns() < 6);
    let last = tok
        .encode_segment(&user_segment("message number 5"))
        .unwrap();
    let toks = chat.tokens();
    assert!(toks.windows(last.len()).any(|w| w == &last[..]));
    drop(chat);
    let e = String::from_utf8(err).unwrap();
    assert!(e.contains("dropped the oldest"), "{e}");
    assert!(e.lines().all(|l| l.starts_with("xverse-run: ")));
    // the cache holds what the conversation says, at the right positions
    let h = s.history().to_vec();
    let mut fresh = engine(&model, n_ctx);
    let a = fresh.eval(&h, false).unwrap();
    let mut s2 = s;
    s2.rewind(h.len() - 1);
    let b = s2.eval_prompt(&h[h.len() - 1..]).unwrap();
    assert_eq!(argmax(&a), argmax(&b));
}

#[test]
fn chat_refuses_a_message_that_can_never_fit() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::tiny(dir.path(), "t.gguf", &TinySpec::default());
    let model = Model::load(&p).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let mut s = Session::new(engine(&model, 32), &tok, Sampler::new(greedy()));
    let mut chat = Chat::new(&mut s, None, Some(2)).unwrap();
    let mut err = Vec::new();
    let t = chat
        .turn(&"the model ".repeat(20), &mut Vec::new(), &mut err)
        .unwrap();
    assert_eq!(t, Turn::Refused);
    let e = String::from_utf8(err).unwrap();
    assert_eq!(e.lines().count(), 1);
    assert!(e.contains("too long for the context of 32"), "{e}");
    assert_eq!(chat.turns(), 0);
    // and the chat goes on
    assert!(matches!(
        chat.turn("hi", &mut Vec::new(), &mut Vec::new()).unwrap(),
        Turn::Replied { .. }
    ));
}
