//! [`MethodRef`]: a method of a flow named by a constant that carries its output type, so that
//! [`Ctx::output`](crate::Ctx::output) reads the latest output of any completed method of the
//! run, type-checked by the compiler, without copying it into the state first.

use std::marker::PhantomData;

/// A method of a flow together with its output type `T`: `#[flow]` writes one associated
/// constant per method, its name in upper case (`Self::FETCH_A` for `fetch_a`), for
/// [`Ctx::output`](crate::Ctx::output).
///
/// ```
/// use flow_core::prelude::*;
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct S;
/// struct Pair;
///
/// #[flow(state = S)]
/// impl Pair {
///     #[start]
///     async fn fetch_a(&self) -> Result<u32> { Ok(7) }
/// }
///
/// let method: flow_core::MethodRef<u32> = Pair::FETCH_A;
/// assert_eq!(method.name(), "fetch_a");
/// ```
pub struct MethodRef<T> {
    flow: &'static str,
    method: &'static str,
    id: u16,
    output: PhantomData<fn() -> T>,
}

impl<T> MethodRef<T> {
    /// Written by `#[flow]`: method `id` of flow `flow`, named `method`, returns `T`.
    #[doc(hidden)]
    pub const fn new(flow: &'static str, method: &'static str, id: u16) -> Self {
        MethodRef { flow, method, id, output: PhantomData }
    }

    /// The method's name.
    pub const fn name(&self) -> &'static str {
        self.method
    }

    pub(crate) const fn flow(&self) -> &'static str {
        self.flow
    }

    pub(crate) const fn index(&self) -> usize {
        self.id as usize
    }
}

impl<T> Clone for MethodRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for MethodRef<T> {}

impl<T> std::fmt::Debug for MethodRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.flow, self.method)
    }
}
