//! Stages: the pieces of the model pipeline (`shared/DESIGN.md` §5).
//!
//! A stage owns a contiguous range of layers, their weights and their KV cache. Hidden states
//! (`n_tokens × hidden` f32) go from stage to stage through host memory. The stage that holds
//! the last layer also runs the output head. Today there is one kind, [`CpuStage`] (weights in
//! the file's memory map); GPU stages implement the same trait.

use std::ops::Range;

use crate::cpu::forward;
use crate::error::RuntimeError;
use crate::kv_cache::{KvCache, KvTypes};
use crate::model::Model;

/// A contiguous range of layers with their weights and KV cache, on one device.
pub trait Stage: Send {
    /// The device, for messages (`"cpu"`, `"gpu0"`, …).
    fn device(&self) -> String;

    /// The layers this stage runs.
    fn layers(&self) -> Range<usize>;

    /// Whether this stage runs the output head (it holds the model's last layer).
    fn has_head(&self) -> bool;

    /// Runs this stage's layers on `hidden` (`n_tokens × hidden`, in place) for tokens at
    /// positions `pos0..pos0 + n_tokens`, storing their keys and values in the stage's cache.
    fn forward(
        &mut self,
        hidden: &mut [f32],
        pos0: usize,
        n_tokens: usize,
    ) -> Result<(), RuntimeError>;

    /// The output head (final norm + output matrix) on the rows of `hidden` (`n_rows ×
    /// hidden`): `n_rows × vocab` logits. An error on a stage without the head.
    fn head(&mut self, hidden: &[f32], n_rows: usize) -> Result<Vec<f32>, RuntimeError>;

    /// Forgets cached positions from `n` on.
    fn truncate(&mut self, n: usize);

    /// Benchmarks only: the cache holds positions `0..n` of synthetic keys and values (no
    /// model run; see [`crate::kv_cache::LayerCache::fill_synthetic`]).
    fn fill_cache_synthetic(&mut self, n: usize, seed: u64) -> Result<(), RuntimeError>;

    /// Bytes of KV cache allocated.
    fn cache_bytes(&self) -> usize;
}

/// Layers on the CPU, their weights read in place from the file's memory map.
pub struct CpuStage<'m> {
    model: &'m Model,
    layers: Range<usize>,
    cache: KvCache,
}

impl<'m> CpuStage<'m> {
    /// A CPU stage for `layers` of `model` with a cache of `n_ctx` positions of `cache_type`.
    pub fn new(
        model: &'m Model,
        layers: Range<usize>,
        n_ctx: usize,
        cache_type: KvTypes,
    ) -> Result<CpuStage<'m>, RuntimeError> {
        if layers.start > layers.end || layers.end > model.n_layers() {
            return Err(RuntimeError::new(format!(
                "stage layers {}..{} outside the model's {} layers",
                layers.start,
                layers.end,
                model.n_layers()
            )));
        }
        let hp = &model.hparams;
        let cache = KvCache::new(
            cache_type,
            layers.len(),
            n_ctx,
            hp.kv_heads as usize,
            hp.head_dim as usize,
        )?;
        Ok(CpuStage {
            model,
            layers,
            cache,
        })
    }
}

impl Stage for CpuStage<'_> {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    fn has_head(&self) -> bool {
        self.layers.end == self.model.n_layers()
    }

    fn forward(
        &mut self,
        hidden: &mut [f32],
        pos0: usize,
        n_tokens: usize,
    ) -> Result<(), RuntimeError> {
        let hp = &self.model.hparams;
        if hidden.len() != n_tokens * hp.hidden as usize {
            return Err(RuntimeError::new(format!(
                "stage {}: {} hidden values for {n_tokens} tokens of {}",
                self.device(),
                hidden.len(),
                hp.hidden
            )));
        }
        let ty = self.cache.cache_type();
        for (i, l) in self.layers.clone().enumerate() {
            let w = self.model.layer(l);
            forward::layer(hp, &w, self.cache.layer_mut(i), ty, hidden, pos0, n_tokens)?;
        }
        Ok(())
    }

    fn head(&mut self, hidden: &[f32], n_rows: usize) -> Result<Vec<f32>, RuntimeError> {
        if !self.has_head() {
            return Err(RuntimeError::new(format!(
                "stage {} (layers {}..{}) does not hold the output head",
                self.device(),
                self.layers.start,
                self.layers.end
            )));
        }
        let m = self.model;
        forward::logits(&m.hparams, &m.output_norm(), &m.output(), hidden, n_rows)
    }

    fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    fn fill_cache_synthetic(&mut self, n: usize, seed: u64) -> Result<(), RuntimeError> {
        let seed = seed.wrapping_add((self.layers.start as u64) << 32);
        self.cache.fill_synthetic(n, seed)
    }
}
