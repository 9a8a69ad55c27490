//! The answer of one API call, still on its way: what the record stores' traits
//! return (change sets' records, the looks for a change's object), boxed so the
//! traits stay object-safe and the logic can be tested against in-memory stores.

use std::future::Future;
use std::pin::Pin;

/// A boxed future of the API server's answer.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, kube::Error>> + Send + 'a>>;
