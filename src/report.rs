//! How errors are rendered into log fields and messages: with their sources, since the
//! top-level messages of hyper and the engine client are terse.

/// Renders an error with its sources, `top: cause: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
