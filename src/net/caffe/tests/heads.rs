//! Where a Caffe net starts and ends: a MemoryData input, a Softmax inside the net, a Softmax
//! that nothing reads (the head).

use super::*;

#[test]
fn a_memory_data_layer_is_the_same_net_as_an_input_layer() {
    let body = LENET
        .split_once("layer {\n  name: \"conv1\"")
        .map(|(_, rest)| format!("layer {{\n  name: \"conv1\"{rest}"))
        .unwrap();
    let memory = format!("name: \"LeNet\"\nlayer {{ name: \"mnist\" type: \"MemoryData\" top: \"data\" top: \"label\" memory_data_param {{ batch_size: 64 channels: 1 height: 28 width: 28 }} }}\n{body}");
    let input = format!("name: \"LeNet\"\nlayer {{ name: \"mnist\" type: \"Input\" top: \"data\" input_param {{ shape {{ dim: 64 dim: 1 dim: 28 dim: 28 }} }} }}\n{body}");
    let no_data = &mut || Err("no --data".to_string());
    let (a, b) = (
        from_prototxt(&memory, "m", no_data, &mut |_| {}).unwrap(),
        from_prototxt(&input, "i", no_data, &mut |_| {}).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.input, vec![1, 28, 28]);
    // ... which is the Data-layer LeNet's spec on MNIST's 1×28×28 samples.
    assert_eq!(a, parse(LENET).unwrap());
    let e = parse(&memory.replace("height: 28 ", "")).unwrap_err();
    assert!(e.contains("memory_data_param needs channels, height, width"), "{e}");
}

/// A Softmax whose output a later layer reads is an inner `softmax` reading its bottom (here an
/// attention-like gate: fc → softmax → Eltwise PROD with fc); SoftmaxWithLoss stays the head.
#[test]
fn a_softmax_read_by_a_later_layer_is_an_inner_softmax() {
    let proto = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "fc1" type: "InnerProduct" bottom: "conv" top: "fc1" inner_product_param { num_output: 6 } }
layer { name: "gate" type: "Softmax" bottom: "fc1" top: "gate" }
layer { name: "att" type: "Eltwise" bottom: "fc1" bottom: "gate" top: "att" eltwise_param { operation: PROD } }
layer { name: "fc2" type: "InnerProduct" bottom: "att" top: "fc2" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "prob" bottom: "label" top: "acc" }
"#;
    let toml = r#"
name = "caffe-net"
input = [2, 4, 4]
classes = 3
[[layer]]
name = "conv"
type = "conv2d"
out_channels = 2
kernel = 3
[[layer]]
name = "fc1"
type = "linear"
out_features = 6
[[layer]]
name = "gate"
type = "softmax"
[[layer]]
name = "att"
type = "mul"
inputs = ["fc1", "gate"]
[[layer]]
name = "fc2"
type = "linear"
out_features = 3
"#;
    let got = parse(proto).unwrap();
    assert_eq!(got, ModelSpec::from_toml(toml, "test").unwrap());
    assert!(matches!(&got.layers[2], LayerSpec::Softmax { name, input: None } if name == "gate"));
    Net::build(&got).unwrap();
    // A chain fc1 → ReLU → Softmax → fc2 → SoftmaxWithLoss (the loss reads fc2): the softmax
    // is inner, reading the ReLU (the previous layer, so no named input).
    let chain = r#"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" inner_product_param { num_output: 5 } }
layer { name: "relu" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "sm" type: "Softmax" bottom: "fc1" top: "sm" softmax_param { axis: 1 } }
layer { name: "fc2" type: "InnerProduct" bottom: "sm" top: "fc2" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc2" bottom: "label" top: "loss" }
"#;
    let spec = parse(chain).unwrap();
    let names: Vec<&str> = spec.layers.iter().map(|l| l.name()).collect();
    assert_eq!(names, ["fc1", "relu", "sm", "fc2"]);
    assert!(matches!(&spec.layers[2], LayerSpec::Softmax { input: None, .. }));
    Net::build(&spec).unwrap();
    // Over a 2×4×4 blob Caffe's Softmax (over the 2 channels at each position) is not convoy's
    // (over all 32 values): refused, naming the line.
    let conv = chain.replace(
        "type: \"InnerProduct\" bottom: \"data\" top: \"fc1\" inner_product_param { num_output: 5 }",
        "type: \"Convolution\" bottom: \"data\" top: \"fc1\" convolution_param { num_output: 2 kernel_size: 1 }",
    );
    let e = parse(&conv).unwrap_err();
    assert!(
        e.starts_with("net.prototxt:5:") && e.contains("Softmax 'sm'") && e.contains("[2, 4, 4]") && e.contains("hint"),
        "{e}"
    );
}

/// A Softmax nothing reads is the head as before: a deploy net's `prob`, and a `prob` read only
/// by a TEST-phase or an Accuracy layer; a layer after it is refused as after the loss.
#[test]
fn a_softmax_nothing_reads_is_the_head() {
    let base = r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"#;
    for tail in [
        "",
        "layer { name: \"acc\" type: \"Accuracy\" bottom: \"prob\" bottom: \"label\" top: \"acc\" }",
        "layer { name: \"t\" type: \"InnerProduct\" bottom: \"prob\" top: \"t\" include { phase: TEST } inner_product_param { num_output: 3 } }",
    ] {
        let spec = parse(&format!("{base}{tail}")).unwrap();
        assert_eq!(spec.layers.iter().map(|l| l.name()).collect::<Vec<_>>(), ["fc"], "{tail}");
    }
    // A layer reading `fc` (not `prob`) after the head comes after the loss.
    let e = parse(&format!("{base}layer {{ name: \"x\" type: \"ReLU\" bottom: \"fc\" top: \"x\" }}")).unwrap_err();
    assert!(e.contains(":4:") && e.contains("after the loss"), "{e}");
    // An in-place ReLU rewrites `prob` after reading it: the softmax is read, so inner.
    let spec = parse(&format!("{base}layer {{ name: \"r\" type: \"ReLU\" bottom: \"prob\" top: \"prob\" }}\nlayer {{ name: \"fc2\" type: \"InnerProduct\" bottom: \"prob\" top: \"fc2\" inner_product_param {{ num_output: 3 }} }}")).unwrap();
    assert_eq!(spec.layers.iter().map(|l| l.name()).collect::<Vec<_>>(), ["fc", "prob", "r", "fc2"]);
}
