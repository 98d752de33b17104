//! The error of reading a Caffe prototxt. It lives beside caffe/ rather than in it so that
//! `SpecError` (spec/) can carry it without spec/ importing the reader.

/// An error reading a Caffe prototxt (net or solver): the file, the line (`None`: the file as a
/// whole) and what is wrong, shown as `file:line: msg`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {msg}", line.map_or(String::new(), |l| format!(":{l}")))]
pub struct CaffeError {
    /// The prototxt (its path, or the name it was given under).
    pub file: String,
    /// The line of the field or layer at fault.
    pub line: Option<usize>,
    /// What is wrong, with a hint where there is one.
    pub msg: String,
}

impl CaffeError {
    /// An error at `line` of `file`.
    pub fn at(file: &str, line: usize, msg: impl Into<String>) -> CaffeError {
        CaffeError { file: file.to_string(), line: Some(line), msg: msg.into() }
    }

    /// An error about `file` as a whole.
    pub fn whole(file: &str, msg: impl Into<String>) -> CaffeError {
        CaffeError { file: file.to_string(), line: None, msg: msg.into() }
    }
}
