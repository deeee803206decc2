//! Rules that may change while the registry runs (set through the admin API or
//! `berth policy`, in this process or another): each reader takes the current set at once
//! and keeps it for the request, and a change replaces the whole set.

use std::sync::{Arc, RwLock};

use super::immutable::ImmutableTags;
use super::quota::Quotas;

/// A value shared by every clone and replaced whole.
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Live(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value (later changes do not touch it).
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Live::new(T::default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// What the registry enforces on content.
#[derive(Debug, Default)]
pub struct ContentRules {
    /// Tags that may not move or go.
    pub immutable: ImmutableTags,
    /// Storage bound per namespace.
    pub quotas: Quotas,
}
