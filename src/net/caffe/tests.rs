//! The prototxt reader against TOML specs, Caffe's LeNet, and bad input.

use super::*;
use crate::net::{Net, ParamMult};
use crate::tensor::init::{Filler, VarianceNorm};

/// Caffe's examples/mnist/lenet_train_test.prototxt.
pub const LENET: &str = include_str!("../../../tests/data/lenet_train_test.prototxt");

fn parse(text: &str) -> Result<ModelSpec, String> {
    from_prototxt(text, "net.prototxt", &mut || Ok(vec![1, 28, 28]), &mut |_| {})
}

#[test]
fn caffe_lenet_is_the_zoos_lenet_caffe() {
    let mut warnings = Vec::new();
    let spec = from_prototxt(LENET, "lenet.prototxt", &mut || Ok(vec![1, 28, 28]), &mut |w| warnings.push(w)).unwrap();
    assert_eq!(spec.input, vec![1, 28, 28]);
    assert_eq!(spec.classes, 10);
    let a = Net::build(&spec).unwrap();
    let b = Net::build(&ModelSpec::resolve("lenet-caffe").unwrap()).unwrap();
    assert_eq!(a.layer_names(), b.layer_names());
    let shapes = |n: &Net| n.layout().entries().iter().map(|e| (e.name.clone(), e.shape.clone())).collect::<Vec<_>>();
    assert_eq!(shapes(&a), shapes(&b));
    // Its lr_mult 1/2 and xavier/constant fillers are read: the zoo's TOML says the same.
    let zoo = ModelSpec::resolve("lenet-caffe").unwrap();
    for (a, b) in spec.layers.iter().zip(&zoo.layers) {
        assert_eq!((a.mults(), a.fillers()), (b.mults(), b.fillers()), "{}", a.name());
    }
    assert!(!warnings.iter().any(|w| w.contains("fillers") || w.contains("lr_mult")), "{warnings:?}");
}

#[test]
fn param_multipliers_and_fillers_are_read() {
    let spec = parse(
        r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "msra" variance_norm: FAN_OUT } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" param { lr_mult: 1 } param { lr_mult: 1 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "uniform" min: -1 max: 1 } } }
"#,
    )
    .unwrap();
    let net = Net::build(&spec).unwrap();
    let mult = |n: &str| net.layout().get(n).unwrap().mult;
    assert_eq!((mult("conv.weight"), mult("conv.bias")), (ParamMult::FROZEN, ParamMult { lr: 2.0, decay: 0.0 }));
    assert_eq!((mult("fc.weight"), mult("fc.bias")), (ParamMult::ONE, ParamMult::ONE));
    assert_eq!(net.layout().mult_ranges(), vec![(0..18, ParamMult::FROZEN), (18..20, ParamMult { lr: 2.0, decay: 0.0 })]);
    assert_eq!(spec.layers[0].fillers(), [Some(&Filler::Msra { variance_norm: VarianceNorm::FanOut }), Some(&Filler::Constant { value: 0.2 })]);
    assert_eq!(spec.layers[1].fillers(), [Some(&Filler::Gaussian { mean: 0.0, std: 0.01 }), Some(&Filler::Uniform { min: -1.0, max: 1.0 })]);
    let params = net.init_params(1);
    assert!(params[18..20].iter().all(|&b| b == 0.2));
    for (text, needle) in [
        ("param { lr_mult: -1 }", "lr_mult -1"),
        ("param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 1 }", "3 lr_mult values"),
        ("param { name: \"shared\" }", "shared"),
        ("convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: \"bilinear\" } }", "bilinear"),
    ] {
        let body = if text.starts_with("param") { format!("{text} convolution_param {{ num_output: 2 kernel_size: 3 }}") } else { text.to_string() };
        let proto = format!("layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{ shape {{ dim: 1 dim: 1 dim: 4 dim: 4 }} }} }}\nlayer {{ name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" {body} }}\nlayer {{ name: \"fc\" type: \"InnerProduct\" bottom: \"c\" top: \"fc\" inner_product_param {{ num_output: 2 }} }}");
        let e = parse(&proto).and_then(|s| Net::build(&s).map(|_| ()).map_err(|e| e.to_string())).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn an_input_layer_and_alexnet_style_layers_map() {
    let spec = parse(
        r#"name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 10 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"#,
    )
    .unwrap();
    assert_eq!((spec.input.clone(), spec.classes, spec.layers.len()), (vec![3, 32, 32], 5, 6));
    // Caffe rounds pooling up: (32 − 3)/2 rounded up + 1 = 16.
    let net = Net::build(&spec).unwrap();
    assert_eq!(net.layer_out_shape(3), vec![8, 16, 16]);
}

/// A residual block as Caffe writes it (ResNet's deploy prototxts: BatchNorm + Scale in
/// place, Eltwise SUM, a Concat branch) reads as the same spec as its TOML.
#[test]
fn residual_blocks_with_batch_norm_scale_eltwise_and_concat_map_to_the_dag() {
    let proto = r#"
name: "block"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv1" top: "sum" }
layer { name: "side" type: "Convolution" bottom: "data" top: "side" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "side" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"#;
    let toml = r#"
name = "block"
input = [3, 8, 8]
classes = 5
[[layer]]
name = "conv1"
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
bias = false
[[layer]]
name = "bn1"
type = "batch_norm"
momentum = 0.100000024
affine = false
[[layer]]
name = "scale1"
type = "scale"
[[layer]]
name = "relu1"
type = "relu"
[[layer]]
name = "conv2"
type = "conv2d"
out_channels = 4
kernel = 3
padding = 1
bias = false
[[layer]]
name = "sum"
type = "add"
inputs = ["conv2", "relu1"]
[[layer]]
name = "side"
type = "conv2d"
input = "input"
out_channels = 2
kernel = 1
[[layer]]
name = "cat"
type = "concat"
inputs = ["sum", "side"]
[[layer]]
name = "fc"
type = "linear"
out_features = 5
"#;
    let got = parse(proto).unwrap();
    let want = ModelSpec::from_toml(toml, "test").unwrap();
    assert_eq!(got.layers, want.layers);
    assert_eq!((&got.input, got.classes), (&want.input, want.classes));
    let net = Net::build(&want).unwrap();
    assert_eq!(net.sources(7), &[Some(5), Some(6)]);
}

/// Eltwise PROD and MAX, and SUM with coefficients, read as the TOML's mul, max and add.
#[test]
fn eltwise_prod_max_and_weighted_sum_map_to_joins() {
    let proto = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "p" type: "Eltwise" bottom: "a" bottom: "b" top: "p" eltwise_param { operation: PROD } }
layer { name: "m" type: "Eltwise" bottom: "p" bottom: "a" top: "m" eltwise_param { operation: MAX } }
layer { name: "s" type: "Eltwise" bottom: "m" bottom: "b" top: "s" eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layer { name: "fc" type: "InnerProduct" bottom: "s" top: "fc" inner_product_param { num_output: 3 } }
"#;
    let toml = r#"
name = "caffe-net"
input = [2, 4, 4]
classes = 3
[[layer]]
name = "a"
type = "conv2d"
out_channels = 2
kernel = 1
[[layer]]
name = "b"
type = "conv2d"
input = "input"
out_channels = 2
kernel = 1
[[layer]]
name = "p"
type = "mul"
inputs = ["a", "b"]
[[layer]]
name = "m"
type = "max"
inputs = ["p", "a"]
[[layer]]
name = "s"
type = "add"
inputs = ["m", "b"]
coeff = [1.0, -1.0]
[[layer]]
name = "fc"
type = "linear"
out_features = 3
"#;
    let got = parse(proto).unwrap();
    assert_eq!(got, ModelSpec::from_toml(toml, "test").unwrap());
    Net::build(&got).unwrap();
}

#[test]
fn unknown_types_fields_and_broken_text_name_the_line() {
    let cases = [
        ("layer { name: \"a\" type: \"Input\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"d\" type: \"Deconvolution\" }", ":2:", "Deconvolution"),
        ("layer { name: \"a\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"r\" type: \"ReLU\" bottom: \"nope\" top: \"r\" }", ":2:", "blob 'nope'"),
        ("layer { name: \"a\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"e\" type: \"Eltwise\" bottom: \"data\" bottom: \"data\" top: \"e\" eltwise_param { operation: MIN } }", ":2:", "MIN"),
        ("layer { name: \"a\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"e\" type: \"Eltwise\" bottom: \"data\" bottom: \"data\" top: \"e\" eltwise_param { operation: PROD coeff: 2 coeff: 1 } }", ":2:", "coeff is for SUM"),
        ("layer { name: \"a\" type: \"Input\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"c\" type: \"Convolution\"\n convolution_param { num_output: 2 kernel_size: 3 bogus: 1 } }", ":3:", "bogus"),
        ("layer { name: \"a\" type: \"Input\" ", ":1:", "missing '}'"),
        ("layers { name: \"old\" }", ":1:", "V1"),
        ("layer { name: \"fc\" type: \"InnerProduct\" inner_product_param { num_output: 2 } }", "", "no input shape"),
        ("layer { name: \"a\" type: \"Input\" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\nlayer { name: \"c\" type: \"Convolution\" convolution_param { num_output: x kernel_size: 3 } }", ":2:", "not a valid number"),
    ];
    for (text, line, needle) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.contains(line) && e.contains(needle), "{text}: {e}");
    }
}

/// transform_param: (pixel − mean)·scale on 0..255 is (x − mean/255)/(1/(255·scale)) on
/// convoy's x = pixel/255; the TEST layer's must agree but for mirror; crop_size 0 is Caffe's
/// "no crop"; mean_file is refused.
#[test]
fn transform_param_maps_to_normalisation_on_unit_pixels() {
    let t = transform_from_prototxt(LENET, "lenet.prototxt").unwrap().unwrap();
    // scale 0.00390625 = 1/256, not 1/255: x·255/256.
    assert_eq!((t.mean.clone(), t.std.clone(), t.mirror, t.crop, t.test_mirror), (vec![0.0], vec![256.0 / 255.0], false, None, false));
    let train = "layer { name: \"d\" type: \"Data\" top: \"data\" include { phase: TRAIN }\n transform_param { scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 mirror: true crop_size: 227 } }\n";
    let test = |p: &str| format!("{train}layer {{ name: \"t\" type: \"Data\" top: \"data\" include {{ phase: TEST }}\n transform_param {{ {p} }} }}");
    let t = transform_from_prototxt(&test("scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 mirror: false crop_size: 227"), "n").unwrap().unwrap();
    assert_eq!((t.mean.clone(), t.std.len(), t.mirror, t.crop, t.line, t.test_mirror), (vec![104.0 / 255.0, 117.0 / 255.0, 123.0 / 255.0], 3, true, Some(227), 2, false));
    let mirrored = transform_from_prototxt(&test("scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 mirror: true crop_size: 227"), "n").unwrap().unwrap();
    assert!(mirrored.test_mirror, "a TEST mirror is reported (and not applied)");
    for (p, needle) in [
        ("mirror: false", "mean_value/scale and crop_size"),
        ("scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 224", "crop_size"),
        ("scale: 0.02 mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 227", "mean_value/scale"),
    ] {
        let e = transform_from_prototxt(&test(p), "n").unwrap_err();
        assert!(e.starts_with("n:4:") && e.contains("(line 2)") && e.contains(&format!("in {needle}:")) && e.contains("hint"), "{p}: {e}");
    }
    let e = transform_from_prototxt(&test("mean_file: \"m.binaryproto\""), "n").unwrap_err();
    assert!(e.contains("n:4:") && e.contains("mean_file"), "{e}");
    let zero = transform_from_prototxt("layer { name: \"d\" type: \"Data\" transform_param { crop_size: 0 } }", "n").unwrap().unwrap();
    assert_eq!(zero.crop, None, "Caffe's crop_size 0 is no crop");
    assert!((t.std[0] * 255.0 * 0.017 - 1.0).abs() < 1e-6);
    assert_eq!(transform_from_prototxt("layer { name: \"i\" type: \"Input\" }", "n").unwrap(), None);
    let e = transform_from_prototxt("layer { name: \"d\" type: \"Data\"\n transform_param { mean_file: \"m.binaryproto\" } }", "n").unwrap_err();
    assert!(e.contains("n:2:") && e.contains("mean_value"), "{e}");
}
