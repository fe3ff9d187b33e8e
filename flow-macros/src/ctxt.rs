//! The error sink: every phase reports into one [`Ctxt`] instead of returning at the first
//! problem, so the user sees all of a flow's mistakes in one build (the serde_derive pattern).

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// Collects errors; must be drained with [`Ctxt::check`].
pub(crate) struct Ctxt {
    // `None` once drained: reporting after `check` would lose the error silently.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt { errors: RefCell::new(Some(Vec::new())) }
    }

    /// Reports `msg` spanned on `tokens` (the whole range of them).
    pub(crate) fn error_spanned_by<T: ToTokens>(&self, tokens: T, msg: impl Display) {
        self.syn_error(syn::Error::new_spanned(tokens.into_token_stream(), msg));
    }

    /// Reports `msg` at one span.
    pub(crate) fn error_at(&self, span: Span, msg: impl Display) {
        self.syn_error(syn::Error::new(span, msg));
    }

    /// Reports an error syn produced.
    pub(crate) fn syn_error(&self, err: syn::Error) {
        if let Some(errors) = self.errors.borrow_mut().as_mut() {
            errors.push(err);
        }
    }

    /// How many errors are reported so far; a phase compares counts to skip checks that would
    /// only repeat an earlier error in other words.
    pub(crate) fn count(&self) -> usize {
        self.errors.borrow().as_ref().map_or(0, Vec::len)
    }

    /// Drains the sink: `Err` with every error as `compile_error!` tokens when there was one.
    pub(crate) fn check(self) -> Result<(), TokenStream> {
        let errors = self.errors.borrow_mut().take().unwrap_or_default();
        if errors.is_empty() {
            return Ok(());
        }
        Err(errors.iter().map(syn::Error::to_compile_error).collect())
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        // A sink dropped undrained would swallow errors; that is a bug in this crate, never
        // something user input can cause, so it is only asserted in debug builds.
        debug_assert!(
            std::thread::panicking() || self.errors.borrow().is_none(),
            "flow-macros: an error sink was dropped without being checked"
        );
    }
}
