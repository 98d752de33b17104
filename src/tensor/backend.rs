//! The backend seam: which library runs the heavy layers.
//!
//! `Backend::Native` is convoy's own kernels (im2col + GEMM, the direct kernels of
//! `direct_conv`/`direct_oc`); the layers run them themselves. Any other backend is an external
//! library reached through an engine object: a layer asks `conv_engine` or `linear_engine` once
//! for its shape and from then on hands it its plain buffers (`LayerEngine`). oneDNN (`--features dnnl`, as Intel's
//! Caffe runs on MKL-DNN) is the one built today; an accelerator backend goes in the same place.
//! An engine keeps whatever layout its library prefers inside, and converts at its edges.

pub use super::engine::{ConvDesc, LayerEngine};
use std::fmt;

/// Which library runs convolutions and linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// convoy's own kernels (the default build).
    #[default]
    Native,
    /// oneDNN, linked from the system (`cargo build --release --features dnnl`).
    Dnnl,
    /// Per layer, the library measured faster for its shape (`layers::conv2d` says which);
    /// native everywhere in a build without oneDNN. The rule depends on the shape alone, never
    /// on timing or thread count, so every worker of a run makes the same choice.
    Auto,
}

impl Backend {
    /// The names `--backend` accepts.
    pub const NAMES: &'static str = "auto, native, dnnl";

    /// Parses a `--backend` value; `dnnl` in a build without it is an error saying how to build.
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s {
            "native" => Ok(Backend::Native),
            "auto" => Ok(Backend::Auto),
            "dnnl" | "onednn" if cfg!(feature = "dnnl") => Ok(Backend::Dnnl),
            "dnnl" | "onednn" => Err("this convoy was built without oneDNN; hint: apt-get install -y libdnnl-dev libclang-dev, then cargo build --release --features dnnl".into()),
            other => Err(format!("unknown backend '{other}'; hint: one of {}", Backend::NAMES)),
        }
    }

    /// The best backend of this build: per layer (`Auto`) when oneDNN is linked, else the
    /// native kernels.
    pub fn best() -> Backend {
        if cfg!(feature = "dnnl") {
            Backend::Auto
        } else {
            Backend::Native
        }
    }

    /// The library a layer runs on: `self`, or for `Auto` oneDNN where it is built and
    /// `native_pays` does not say otherwise.
    pub fn resolve(self, native_pays: bool) -> Backend {
        match self {
            Backend::Auto if native_pays || !cfg!(feature = "dnnl") => Backend::Native,
            Backend::Auto => Backend::Dnnl,
            b => b,
        }
    }

    /// Name as `--backend` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Dnnl => "dnnl",
            Backend::Auto => "auto",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The engine that runs the convolution `desc` on `backend`; `None` for the native kernels.
pub fn conv_engine(backend: Backend, desc: &ConvDesc) -> Result<Option<Box<dyn LayerEngine>>, String> {
    match backend.resolve(false) {
        Backend::Native | Backend::Auto => Ok(None),
        #[cfg(feature = "dnnl")]
        Backend::Dnnl => Ok(Some(Box::new(super::dnnl::DnnlEngine::new(super::dnnl::Op::Conv(*desc))?))),
        #[cfg(not(feature = "dnnl"))]
        Backend::Dnnl => {
            let _ = desc;
            Err(Backend::parse("dnnl").unwrap_err())
        }
    }
}

/// The engine that runs a linear layer (`inf` → `outf` features, with a bias when `bias`) on
/// `backend`; `None` for the native kernels.
pub fn linear_engine(
    backend: Backend,
    inf: usize,
    outf: usize,
    bias: bool,
) -> Result<Option<Box<dyn LayerEngine>>, String> {
    match backend.resolve(false) {
        Backend::Native | Backend::Auto => Ok(None),
        #[cfg(feature = "dnnl")]
        Backend::Dnnl => Ok(Some(Box::new(super::dnnl::DnnlEngine::new(super::dnnl::Op::Linear { inf, outf, bias })?))),
        #[cfg(not(feature = "dnnl"))]
        Backend::Dnnl => {
            let _ = (inf, outf, bias);
            Err(Backend::parse("dnnl").unwrap_err())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::im2col::ConvShape;

    /// A 3×3 convolution of one channel on 3×3.
    fn desc() -> ConvDesc {
        let shape =
            ConvShape { c: 1, h: 3, w: 3, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1, oh: 1, ow: 1 };
        ConvDesc { shape, o: 1, groups: 1, bias: false }
    }

    #[test]
    fn names_parse_and_unknown_ones_list_the_choices() {
        assert_eq!(Backend::parse("native"), Ok(Backend::Native));
        assert_eq!(Backend::parse("native").unwrap().to_string(), "native");
        let e = Backend::parse("cudnn").unwrap_err();
        assert!(e.contains("cudnn") && e.contains(Backend::NAMES), "{e}");
        assert_eq!(Backend::parse("auto"), Ok(Backend::Auto));
        assert_eq!(Backend::Auto.resolve(true), Backend::Native);
        if cfg!(feature = "dnnl") {
            assert_eq!(Backend::parse("dnnl"), Ok(Backend::Dnnl));
            assert_eq!(Backend::best(), Backend::Auto);
            assert_eq!(Backend::Auto.resolve(false), Backend::Dnnl);
        } else {
            assert!(Backend::parse("dnnl").unwrap_err().contains("--features dnnl"));
            assert_eq!(Backend::best(), Backend::Native);
            assert_eq!(Backend::Auto.resolve(false), Backend::Native);
            assert!(conv_engine(Backend::Dnnl, &desc()).is_err());
        }
        assert!(conv_engine(Backend::Native, &desc()).unwrap().is_none());
    }
}
