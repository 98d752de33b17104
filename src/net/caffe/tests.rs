//! The prototxt reader against TOML specs, Caffe's LeNet, and bad input.

use super::*;
use crate::net::{Net, ParamMult};
use crate::tensor::init::{Filler, VarianceNorm};

/// Caffe's examples/mnist/lenet_train_test.prototxt.
pub const LENET: &str = include_str!("../../../tests/data/lenet_train_test.prototxt");

fn parse(text: &str) -> Result<ModelSpec, String> {
    from_prototxt(text, "net.prototxt", &mut || Ok(vec![1, 28, 28]), &mut |_| {}).map_err(|e| e.to_string())
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
    assert_eq!(
        net.layout().mult_ranges(),
        vec![(0..18, ParamMult::FROZEN), (18..20, ParamMult { lr: 2.0, decay: 0.0 })]
    );
    assert_eq!(
        spec.layers[0].fillers(),
        [Some(&Filler::Msra { variance_norm: VarianceNorm::FanOut }), Some(&Filler::Constant { value: 0.2 })]
    );
    assert_eq!(
        spec.layers[1].fillers(),
        [Some(&Filler::Gaussian { mean: 0.0, std: 0.01 }), Some(&Filler::Uniform { min: -1.0, max: 1.0 })]
    );
    let params = net.init_params(1);
    assert!(params[18..20].iter().all(|&b| b == 0.2));
    for (text, needle) in [
        ("param { lr_mult: -1 }", "lr_mult -1"),
        ("param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 1 }", "3 lr_mult values"),
        ("param { name: \"shared\" }", "shared"),
        ("convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: \"bilinear\" } }", "bilinear"),
    ] {
        let body = if text.starts_with("param") {
            format!("{text} convolution_param {{ num_output: 2 kernel_size: 3 }}")
        } else {
            text.to_string()
        };
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
    assert_eq!(
        (t.mean.clone(), t.std.clone(), t.mirror, t.crop, t.test_mirror),
        (vec![0.0], vec![256.0 / 255.0], false, None, false)
    );
    let train = "layer { name: \"d\" type: \"Data\" top: \"data\" include { phase: TRAIN }\n transform_param { scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 mirror: true crop_size: 227 } }\n";
    let test = |p: &str| {
        format!("{train}layer {{ name: \"t\" type: \"Data\" top: \"data\" include {{ phase: TEST }}\n transform_param {{ {p} }} }}")
    };
    let t = transform_from_prototxt(
        &test("scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 mirror: false crop_size: 227"),
        "n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (t.mean.clone(), t.std.len(), t.mirror, t.crop, t.line, t.test_mirror),
        (vec![104.0 / 255.0, 117.0 / 255.0, 123.0 / 255.0], 3, true, Some(227), 2, false)
    );
    let mirrored = transform_from_prototxt(
        &test("scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 mirror: true crop_size: 227"),
        "n",
    )
    .unwrap()
    .unwrap();
    assert!(mirrored.test_mirror, "a TEST mirror is reported (and not applied)");
    for (p, needle) in [
        ("mirror: false", "mean_value/scale and crop_size"),
        ("scale: 0.017 mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 224", "crop_size"),
        ("scale: 0.02 mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 227", "mean_value/scale"),
    ] {
        let e = transform_from_prototxt(&test(p), "n").unwrap_err().to_string();
        assert!(
            e.starts_with("n:4:")
                && e.contains("(line 2)")
                && e.contains(&format!("in {needle}:"))
                && e.contains("hint"),
            "{p}: {e}"
        );
    }
    let e = transform_from_prototxt(&test("mean_file: \"m.binaryproto\""), "n").unwrap_err().to_string();
    assert!(e.contains("n:4:") && e.contains("mean_file"), "{e}");
    let zero = transform_from_prototxt("layer { name: \"d\" type: \"Data\" transform_param { crop_size: 0 } }", "n")
        .unwrap()
        .unwrap();
    assert_eq!(zero.crop, None, "Caffe's crop_size 0 is no crop");
    assert!((t.std[0] * 255.0 * 0.017 - 1.0).abs() < 1e-6);
    assert_eq!(transform_from_prototxt("layer { name: \"i\" type: \"Input\" }", "n").unwrap(), None);
    let e = transform_from_prototxt(
        "layer { name: \"d\" type: \"Data\"\n transform_param { mean_file: \"m.binaryproto\" } }",
        "n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("n:2:") && e.contains("mean_value"), "{e}");
}

/// Every layer reads its bottom, not the previous layer: ReLU, Sigmoid, TanH and Flatten on a
/// branch (an in-place ReLU too, which rewrites its blob for later readers). With x = input and
/// y = −2x, the sum is y + relu(x) + sigmoid(y) + tanh(relu(x)); reading the previous layer
/// instead would give y + relu(y) + … (a different net, built without a word).
#[test]
fn activations_and_flatten_read_their_bottom_not_the_previous_layer() {
    let proto = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 2 } } }
layer { name: "x" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "y" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "rx" type: "ReLU" bottom: "x" top: "x" }
layer { name: "sy" type: "Sigmoid" bottom: "y" top: "sy" }
layer { name: "tx" type: "TanH" bottom: "x" top: "tx" }
layer { name: "sum" type: "Eltwise" bottom: "y" bottom: "x" bottom: "sy" bottom: "tx" top: "sum" }
layer { name: "fy" type: "Flatten" bottom: "y" top: "fy" }
layer { name: "fs" type: "Flatten" bottom: "sum" top: "fs" }
layer { name: "cat" type: "Concat" bottom: "fs" bottom: "fy" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" inner_product_param { num_output: 4 } }
"#;
    let spec = parse(proto).unwrap();
    let inputs: Vec<(String, Vec<String>)> = spec
        .layers
        .iter()
        .map(|l| {
            let from = match l {
                LayerSpec::Relu { input, .. }
                | LayerSpec::Sigmoid { input, .. }
                | LayerSpec::Tanh { input, .. }
                | LayerSpec::Flatten { input, .. }
                | LayerSpec::Conv2d { input, .. }
                | LayerSpec::Linear { input, .. } => input.iter().cloned().collect(),
                LayerSpec::Add { inputs, .. } | LayerSpec::Concat { inputs, .. } => inputs.clone(),
                other => panic!("{other:?}"),
            };
            (l.name().to_string(), from)
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        inputs,
        vec![
            ("x".into(), s(&[])),
            ("y".into(), s(&[])),
            ("rx".into(), s(&["x"])),
            ("sy".into(), s(&["y"])),
            ("tx".into(), s(&["rx"])),
            ("sum".into(), s(&["y", "rx", "sy", "tx"])),
            ("fy".into(), s(&["y"])),
            ("fs".into(), s(&["sum"])),
            ("cat".into(), s(&["fs", "fy"])),
            ("fc".into(), s(&[])),
        ]
    );
    // The forward pass against hand-computed values: x = input, y = −2x, fc the identity on
    // the 4 features (sum at w = 0, 1, then y at w = 0, 1).
    let mut net = Net::build(&spec).unwrap();
    let mut params = vec![0.0f32; net.layout().len()];
    let mut set = |name: &str, v: &[f32]| {
        let e = net.layout().get(name).unwrap();
        params[e.range()].copy_from_slice(v);
    };
    set("x.weight", &[1.0]);
    set("y.weight", &[-2.0]);
    set("fc.weight", &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let x = crate::tensor::Tensor::from_vec(&[1, 1, 1, 2], vec![0.5, -1.5]).unwrap();
    let out = net.forward(&crate::layers::Ctx::simple(crate::layers::Mode::Eval), &params, &x).unwrap().data().to_vec();
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let want: Vec<f32> = [0.5f32, -1.5]
        .iter()
        .map(|&x| -2.0 * x + x.max(0.0) + sig(-2.0 * x) + x.max(0.0).tanh())
        .chain([-1.0, 3.0])
        .collect();
    assert_eq!(out.len(), 4);
    for (o, w) in out.iter().zip(&want) {
        assert!((o - w).abs() < 1e-6, "{out:?} vs {want:?}");
    }
    // What the old wiring (each activation on the previous layer) computed is far from it.
    assert!((want[0] - (-1.0 + 0.0 + sig(0.0) + 0.5f32.tanh())).abs() > 0.1);
}

/// A typo inside a layer's parameter message, or a parameter message a layer does not take, is
/// refused naming the field and its line, with a hint of what is read.
#[test]
fn unknown_fields_in_parameter_messages_and_parameter_free_layers_name_the_line() {
    let input = "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n";
    let conv = "layer { name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" convolution_param { num_output: 4 kernel_size: 3 } }\n";
    let fc = "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"c\" top: \"fc\" inner_product_param { num_output: 2 } }\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{input}{conv}layer {{ name: \"n\" type: \"LRN\" bottom: \"c\" top: \"n\"\n lrn_param {{ local_sise: 5 }} }}\n{fc}"), ":4:", "'local_sise' in lrn_param of 'n'"),
        (format!("{input}{conv}layer {{ name: \"d\" type: \"Dropout\" bottom: \"c\" top: \"c\"\n dropout_param {{ dropout_ration: 0.5 }} }}\n{fc}"), ":4:", "'dropout_ration'"),
        (format!("{input}{conv}layer {{ name: \"r\" type: \"ReLU\" bottom: \"c\" top: \"c\"\n relu_param {{ negative_slop: 0.1 }} }}\n{fc}"), ":4:", "'negative_slop' in relu_param"),
        (format!("{input}{conv}layer {{ name: \"f\" type: \"Flatten\" bottom: \"c\" top: \"f\"\n convolution_param {{ num_output: 2 }} }}\n{fc}"), ":4:", "'convolution_param' in layer 'f'"),
        (format!("{input}{conv}layer {{ name: \"s\" type: \"Sigmoid\" bottom: \"c\" top: \"c\"\n pooling_param {{ pool: MAX }} }}\n{fc}"), ":4:", "'pooling_param' in layer 's'"),
        (format!("{input}{conv}layer {{ name: \"t\" type: \"TanH\" bottom: \"c\" top: \"c\"\n lrn_param {{ local_size: 3 }} }}\n{fc}"), ":4:", "'lrn_param' in layer 't'"),
        (format!("{input}{conv}{fc}layer {{ name: \"p\" type: \"Softmax\" bottom: \"fc\" top: \"p\"\n convolution_param {{ num_output: 2 }} }}"), ":5:", "'convolution_param' in layer 'p'"),
        (format!("{input}{conv}{fc}layer {{ name: \"l\" type: \"SoftmaxWithLoss\" bottom: \"fc\" top: \"l\"\n loss_param {{ ignore_label: 0 }} }}"), ":5:", "'ignore_label' in loss_param"),
        (format!("{input}{conv}{fc}layer {{ name: \"a\" type: \"Accuracy\" bottom: \"fc\" top: \"a\"\n inner_product_param {{ num_output: 2 }} }}"), ":5:", "'inner_product_param' in layer 'a'"),
        (format!("{input}{conv}{fc}layer {{ name: \"a\" type: \"Accuracy\" bottom: \"fc\" top: \"a\" accuracy_param {{\n top: 5 }} }}"), ":5:", "'top' in accuracy_param"),
        (format!("layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{\n shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }} shap {{ dim: 1 }} }} }}\n{conv}{fc}"), ":2:", "'shap' in input_param"),
        (format!("layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{ shape {{\n dims: 1 }} }} }}\n{conv}{fc}"), ":2:", "'dims' in input_param shape"),
        (format!("layer {{ name: \"data\" type: \"MemoryData\" top: \"data\"\n memory_data_param {{ channels: 3 height: 8 width: 8 chanels: 3 }} }}\n{conv}{fc}"), ":2:", "'chanels' in memory_data_param"),
        (format!("layer {{ name: \"data\" type: \"Data\" top: \"data\"\n data_param {{ source: \"x\" mirror: true }} }}\n{conv}{fc}"), ":2:", "'mirror' in data_param"),
        (format!("{input}layer {{ name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" include {{\n phase: TRAIN stage: \"x\" }} convolution_param {{ num_output: 4 kernel_size: 3 }} }}\n{fc}"), ":3:", "'stage' in include"),
        (format!("{input}layer {{ name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" include {{\n phase: TRAINING }} convolution_param {{ num_output: 4 kernel_size: 3 }} }}\n{fc}"), ":3:", "TRAIN or TEST"),
        (format!("{input}layer {{ name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\"\n include {{ phase: TRAIN }} exclude {{ phase: TEST }} convolution_param {{ num_output: 4 kernel_size: 3 }} }}\n{fc}"), ":2:", "both include and exclude"),
    ];
    for (text, line, needle) in cases {
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with(&format!("net.prototxt{line}")) && e.contains(needle) && e.contains("hint"),
            "{text}\n{e}"
        );
    }
    // The same layers with the fields they take are read.
    let ok = format!(
        "{input}{conv}layer {{ name: \"n\" type: \"LRN\" bottom: \"c\" top: \"n\" lrn_param {{ local_size: 3 alpha: 0.001 beta: 0.5 k: 2 norm_region: ACROSS_CHANNELS engine: CAFFE }} }}
layer {{ name: \"r\" type: \"ReLU\" bottom: \"n\" top: \"n\" relu_param {{ negative_slope: 0 engine: CAFFE }} }}
layer {{ name: \"f\" type: \"Flatten\" bottom: \"n\" top: \"f\" flatten_param {{ axis: 1 end_axis: -1 }} }}
layer {{ name: \"d\" type: \"Dropout\" bottom: \"f\" top: \"f\" dropout_param {{ dropout_ratio: 0.2 }} }}
layer {{ name: \"fc\" type: \"InnerProduct\" bottom: \"f\" top: \"fc\" inner_product_param {{ num_output: 2 }} }}
layer {{ name: \"a\" type: \"Accuracy\" bottom: \"fc\" top: \"a\" accuracy_param {{ top_k: 5 }} include {{ phase: TEST }} }}
layer {{ name: \"l\" type: \"SoftmaxWithLoss\" bottom: \"fc\" top: \"l\" loss_param {{ normalization: VALID }} softmax_param {{ axis: 1 }} }}"
    );
    let spec = parse(&ok).unwrap();
    assert!(
        matches!(spec.layers[1], LayerSpec::Lrn { size: 3, alpha, beta, k, .. } if (alpha, beta, k) == (0.001, 0.5, 2.0))
    );
    assert!(matches!(spec.layers[4], LayerSpec::Dropout { p, .. } if p == 0.2));
}

/// `exclude { phase: TEST }` keeps a layer in the training net, `exclude { phase: TRAIN }`
/// drops it (Caffe's rule); include rules with several blocks keep the layer when one matches.
#[test]
fn exclude_rules_are_honoured_as_caffe_does() {
    let net = |rule: &str| {
        parse(&format!(
            "layer {{ name: \"data\" type: \"Input\" top: \"data\" input_param {{ shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{ name: \"c\" type: \"Convolution\" bottom: \"data\" top: \"c\" convolution_param {{ num_output: 4 kernel_size: 3 }} }}
layer {{ name: \"d\" type: \"Dropout\" bottom: \"c\" top: \"c\" {rule} }}
layer {{ name: \"fc\" type: \"InnerProduct\" bottom: \"c\" top: \"fc\" inner_product_param {{ num_output: 2 }} }}"
        ))
        .unwrap()
        .layers
        .iter()
        .map(|l| l.name().to_string())
        .collect::<Vec<_>>()
    };
    let (with, without) = (vec!["c", "d", "fc"], vec!["c", "fc"]);
    assert_eq!(net(""), with);
    assert_eq!(net("exclude { phase: TEST }"), with);
    assert_eq!(net("exclude { phase: TRAIN }"), without);
    assert_eq!(net("include { phase: TEST }"), without);
    assert_eq!(net("include { phase: TEST } include { phase: TRAIN }"), with);
    // The transform of an `exclude { phase: TRAIN }` Data layer is the TEST one's.
    let data = |rule: &str, crop: usize| {
        format!("layer {{ name: \"d{crop}\" type: \"Data\" top: \"data\" {rule} transform_param {{ crop_size: {crop} }} }}\n")
    };
    let t = transform_from_prototxt(
        &format!("{}{}", data("exclude { phase: TRAIN }", 24), data("exclude { phase: TEST }", 24)),
        "n",
    )
    .unwrap()
    .unwrap();
    assert_eq!((t.crop, t.line), (Some(24), 2));
    let e = transform_from_prototxt(
        &format!("{}{}", data("exclude { phase: TRAIN }", 20), data("exclude { phase: TEST }", 24)),
        "n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("n:1:") && e.contains("crop_size"), "{e}");
}

/// The TRAIN-phase Data or MemoryData layer's batch_size, with the line of the field: LeNet's
/// 64 (line 10; the TEST layer's 100 is not read), a MemoryData's, none without the field or
/// with an Input layer, and 0 refused naming its line.
#[test]
fn the_train_data_layers_batch_size_is_read_with_its_line() {
    let d = data_layer_from_prototxt(LENET, "lenet.prototxt").unwrap().unwrap();
    assert_eq!((d.ty.as_str(), d.name.as_str(), d.line, d.batch_size), ("Data", "mnist", 3, Some((64, 10))));
    let test_first = "layer { name: \"t\" type: \"Data\" top: \"data\" include { phase: TEST } data_param { batch_size: 100 } }\nlayer { name: \"d\" type: \"Data\" top: \"data\" include { phase: TRAIN }\n data_param { source: \"x\" batch_size: 16 } }";
    assert_eq!(data_layer_from_prototxt(test_first, "n").unwrap().unwrap().batch_size, Some((16, 3)));
    let memory = "layer { name: \"m\" type: \"MemoryData\" top: \"data\" top: \"label\"\n memory_data_param { batch_size: 32 channels: 1 height: 28 width: 28 } }";
    let m = data_layer_from_prototxt(memory, "n").unwrap().unwrap();
    assert_eq!((m.ty.as_str(), m.name.as_str(), m.line, m.batch_size), ("MemoryData", "m", 1, Some((32, 2))));
    let without = data_layer_from_prototxt("layer { name: \"d\" type: \"Data\" data_param { source: \"x\" } }", "n")
        .unwrap()
        .unwrap();
    assert_eq!(without.batch_size, None);
    assert_eq!(data_layer_from_prototxt("layer { name: \"i\" type: \"Input\" }", "n").unwrap(), None);
    for (text, line) in [
        ("layer { name: \"d\" type: \"Data\" include { phase: TRAIN }\n data_param { source: \"x\"\n batch_size: 0 } }", ":3:"),
        ("layer { name: \"m\" type: \"MemoryData\"\n memory_data_param { batch_size: 0 channels: 1 height: 2 width: 2 } }", ":2:"),
    ] {
        let e = data_layer_from_prototxt(text, "n").unwrap_err().to_string();
        assert!(e.starts_with(&format!("n{line}")) && e.contains("batch_size 0") && e.contains("hint"), "{e}");
    }
    let e = data_layer_from_prototxt("layer { name: \"d\" type: \"Data\" data_param {\n batch_size: -4 } }", "n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("n:2:") && e.contains("not a valid number"), "{e}");
}

/// A MemoryData input builds the same spec as an Input layer of the same shape (LeNet).
mod heads;

#[test]
fn errors_carry_the_file_and_line_as_fields() {
    let text = "name: \"n\"\ninput: \"data\"\ninput_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n\
                layer { name: \"x\" type: \"Frobnicate\" top: \"x\" }\n";
    let e = from_prototxt(text, "net.prototxt", &mut || Ok(vec![1, 4, 4]), &mut |_| {}).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("net.prototxt", Some(4)));
    assert!(e.msg.contains("type 'Frobnicate' is not supported"), "{e}");
    assert_eq!(e.to_string(), format!("net.prototxt:4: {}", e.msg));
    // An error about the file as a whole has no line.
    let e = from_prototxt("name: \"n\"\n", "empty.prototxt", &mut || Ok(vec![1, 4, 4]), &mut |_| {}).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.to_string().starts_with("empty.prototxt: no input shape; hint"), "{e}");
}
