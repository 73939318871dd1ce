//! What a caught panic said: the one way the runtimes built on the bus (its consumer, the
//! projector, the choreography engine) turn a panic into the reason they report.

use std::any::Any;

/// The message of a panic's payload (`panic!("...")`, `assert!`, `expect`), when it has
/// one: a payload that is neither a `&str` nor a `String` has none.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("stock {} below zero", -1)).unwrap_err();
/// assert_eq!(herald_bus::panics::message(&*payload), Some("stock -1 below zero"));
/// let silent = std::panic::catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
/// assert_eq!(herald_bus::panics::message(&*silent), None);
/// ```
pub fn message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// [`message`], or `"(a panic without a message)"`.
///
/// ```
/// let silent = std::panic::catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
/// assert_eq!(herald_bus::panics::describe(&*silent), "(a panic without a message)");
/// ```
pub fn describe(payload: &(dyn Any + Send)) -> String {
    message(payload).unwrap_or("(a panic without a message)").to_owned()
}
