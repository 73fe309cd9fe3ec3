//! End to end over real HTTP/2: the Open Inference Protocol's gRPC service
//! (`inference.GRPCInferenceService`) on the HTTP port beside HTTP/1.1, and on `--grpc-port`,
//! through a tonic client built from the same vendored protos. The answers must be the REST
//! route's, tensor for tensor, and each class of bad call must get its gRPC status.

use crate::common;

use std::collections::HashMap;

use bytes::Bytes;
use common::bus;
use common::client::{self, infer_body, post_json};
use common::tensors::{elements, f32s, i64s, strings};
use segserve::api::grpc::pb;
use segserve::api::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use segserve::api::grpc::pb::infer_parameter::ParameterChoice;
use segserve::api::grpc::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

const SEG: &str = "yolov8n-seg-320";
const DET: &str = "yolov12n-det-640";

type Client = GrpcInferenceServiceClient<Channel>;

async fn client(addr: std::net::SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("an HTTP/2 connection to the HTTP port");
    GrpcInferenceServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

fn param(v: ParameterChoice) -> pb::InferParameter {
    pb::InferParameter {
        parameter_choice: Some(v),
    }
}

/// A request as `tritonclient.grpc` builds it: the photos in `raw_input_contents`.
fn infer_request(model: &str, photos: &[&[u8]]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![photos.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![elements(photos).into()],
        ..Default::default()
    }
}

fn output<'a>(
    r: &'a pb::ModelInferResponse,
    name: &str,
) -> (&'a pb::model_infer_response::InferOutputTensor, &'a [u8]) {
    let i = r
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}"));
    (&r.outputs[i], &r.raw_output_contents[i])
}

#[tokio::test]
async fn health_and_metadata_over_grpc() {
    let det = common::model(DET).display().to_string();
    let s = common::spawn_server(&["--model", &det, "--sessions", "1"]).await;
    let mut c = client(s.addr).await;
    let live = c.server_live(pb::ServerLiveRequest {}).await.unwrap();
    assert!(live.into_inner().live);
    let ready = c.server_ready(pb::ServerReadyRequest {}).await.unwrap();
    assert!(ready.into_inner().ready);
    let ready = |name: &str, version: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready(SEG, ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        c.model_ready(ready(DET, "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("nope", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready(SEG, "2"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );

    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "segserve");
    assert_eq!(meta.extensions, ["binary_tensor_data"]);

    // The same description as GET /v2/models/{name}.
    let rest: Value = reqwest::get(s.url(&format!("/v2/models/{SEG}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: SEG.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (m.name.as_str(), m.platform.as_str()),
        (SEG, "onnxruntime_onnx")
    );
    assert_eq!(m.versions, ["1"]);
    let names =
        |v: &[pb::model_metadata_response::TensorMetadata]| -> Vec<(String, String, Vec<i64>)> {
            v.iter()
                .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
                .collect()
        };
    let rest_names = |v: &Value| -> Vec<(String, String, Vec<i64>)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().into(),
                    t["datatype"].as_str().unwrap().into(),
                    t["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_i64().unwrap())
                        .collect(),
                )
            })
            .collect()
    };
    assert_eq!(names(&m.inputs), rest_names(&rest["inputs"]));
    assert_eq!(names(&m.outputs), rest_names(&rest["outputs"]));

    for (name, version) in [("nope", ""), (SEG, "2")] {
        let e = c
            .model_metadata(pb::ModelMetadataRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{name} v{version}: {e:?}");
    }
    // What the protocol does not cover here is UNIMPLEMENTED, not a broken stream.
    let e = c
        .repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    // HTTP/1.1 on the same port still works.
    assert_eq!(
        reqwest::get(s.url("/v2/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn grpc_infer_answers_what_rest_answers() {
    let s = common::spawn_server(&[]).await;
    let mut c = client(s.addr).await;
    let (status, rest) = post_json(
        s.url(&format!("/v2/models/{SEG}/infer")),
        &infer_body(&bus()),
    )
    .await;
    assert_eq!(status, 200, "{rest}");
    let rest_out = |name: &str| client::output(&rest, name).clone();

    let bus = bus();
    let mut req = infer_request(SEG, &[&bus]);
    req.id = "call-1".into();
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(
        (
            r.model_name.as_str(),
            r.model_version.as_str(),
            r.id.as_str()
        ),
        (SEG, "1", "call-1")
    );
    let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, segserve::api::kserve::wire::OUTPUTS);
    assert_eq!(r.raw_output_contents.len(), r.outputs.len());
    let (boxes, raw) = output(&r, "boxes");
    let n = rest_out("scores")["data"].as_array().unwrap().len();
    assert!(n >= 4);
    assert_eq!(
        (boxes.datatype.as_str(), boxes.shape.clone()),
        ("FP32", vec![n as i64, 4])
    );
    let want: Vec<f32> = rest_out("boxes")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(f32s(raw), want);
    let want: Vec<i64> = rest_out("class_ids")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(i64s(output(&r, "class_ids").1), want);
    let want: Vec<String> = rest_out("masks")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let (masks, raw) = output(&r, "masks");
    assert_eq!(strings(raw), want);
    let p = |k: &str| masks.parameters[k].parameter_choice.clone();
    assert_eq!(
        p("format"),
        Some(ParameterChoice::StringParam("coco_rle".into()))
    );
    assert_eq!(p("height"), Some(ParameterChoice::Int64Param(1080)));
    assert_eq!(
        r.parameters["image_width"].parameter_choice,
        Some(ParameterChoice::Int64Param(810))
    );

    // Parameters as tritonclient sends them (a double, an int64, a string), a subset of
    // outputs, and the photos in bytes_contents instead of the raw framing.
    let zidane = common::photo("zidane.jpg");
    let mut req = infer_request(SEG, &[]);
    req.raw_input_contents.clear();
    req.inputs[0].shape = vec![2];
    req.inputs[0].contents = Some(pb::InferTensorContents {
        bytes_contents: vec![Bytes::from(bus.clone()), Bytes::from(zidane.clone())],
        ..Default::default()
    });
    req.parameters = HashMap::from([
        ("conf".to_string(), param(ParameterChoice::DoubleParam(0.5))),
        ("max_det".to_string(), param(ParameterChoice::Int64Param(2))),
    ]);
    req.inputs[0].parameters = HashMap::from([(
        "classes".to_string(),
        param(ParameterChoice::StringParam("person".into())),
    )]);
    req.outputs = ["class_names", "scores", "image_index", "image_sizes"]
        .map(|name| InferRequestedOutputTensor {
            name: name.into(),
            ..Default::default()
        })
        .to_vec();
    let r = c.model_infer(req).await.unwrap().into_inner();
    let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        ["class_names", "scores", "image_index", "image_sizes"]
    );
    let classes = strings(output(&r, "class_names").1);
    assert_eq!(classes, ["person"; 4], "at most two people in each photo");
    assert!(f32s(output(&r, "scores").1).iter().all(|s| *s >= 0.5));
    assert_eq!(i64s(output(&r, "image_index").1), [0, 0, 1, 1]);
    assert_eq!(i64s(output(&r, "image_sizes").1), [1080, 810, 720, 1280]);
}

#[tokio::test]
async fn each_bad_call_gets_its_grpc_status() {
    let det = common::model(DET).display().to_string();
    let s = common::spawn_server(&[
        "--model",
        &det,
        "--sessions",
        "1",
        "--max-body-bytes",
        "2000000",
    ])
    .await;
    let mut c = client(s.addr).await;
    let bus = bus();
    let mut cases: Vec<(&str, pb::ModelInferRequest, Code)> = Vec::new();
    cases.push((
        "unknown model",
        infer_request("nope", &[&bus]),
        Code::NotFound,
    ));
    let mut r = infer_request(SEG, &[&bus]);
    r.model_version = "7".into();
    cases.push(("unknown version", r, Code::NotFound));
    let mut r = infer_request(SEG, &[&bus]);
    r.inputs[0].datatype = "FP32".into();
    cases.push(("wrong datatype", r, Code::InvalidArgument));
    let mut r = infer_request(SEG, &[&bus]);
    r.inputs[0].name = "input0".into();
    cases.push(("wrong input", r, Code::InvalidArgument));
    let mut r = infer_request(SEG, &[&bus]);
    r.inputs[0].shape = vec![2];
    cases.push(("shape says 2, one element", r, Code::InvalidArgument));
    let mut r = infer_request(SEG, &[&bus]);
    r.raw_input_contents.clear();
    cases.push(("no data", r, Code::InvalidArgument));
    let mut r = infer_request(SEG, &[&bus]);
    r.parameters = HashMap::from([(
        "confidence".to_string(),
        param(ParameterChoice::DoubleParam(0.5)),
    )]);
    cases.push(("unknown parameter", r, Code::InvalidArgument));
    let mut r = infer_request(SEG, &[&bus]);
    r.parameters = HashMap::from([("conf".to_string(), param(ParameterChoice::Int64Param(3)))]);
    cases.push(("conf out of range", r, Code::InvalidArgument));
    let mut r = infer_request(SEG, &[&bus]);
    r.outputs = vec![InferRequestedOutputTensor {
        name: "heatmap".into(),
        ..Default::default()
    }];
    cases.push(("unknown output", r, Code::InvalidArgument));
    let mut r = infer_request(DET, &[&bus]);
    r.outputs = vec![InferRequestedOutputTensor {
        name: "masks".into(),
        ..Default::default()
    }];
    cases.push(("masks of a detector", r, Code::InvalidArgument));
    cases.push((
        "corrupt image",
        infer_request(SEG, &[b"\x89PNG\r\n\x1a\n not really a png"]),
        Code::InvalidArgument,
    ));
    cases.push((
        "not an image",
        infer_request(SEG, &[b"hello, world"]),
        Code::InvalidArgument,
    ));
    let big = vec![7u8; 3_000_000];
    cases.push((
        "message over the body limit",
        infer_request(SEG, &[&big]),
        Code::ResourceExhausted,
    ));
    for (what, req, want) in cases {
        let e = c.model_infer(req).await.expect_err(what);
        assert_eq!(e.code(), want, "{what}: {e:?}");
        assert!(!e.message().is_empty(), "{what}: no message");
    }
    // After every refusal the connection and the server still serve.
    let r = c.model_infer(infer_request(SEG, &[&bus])).await.unwrap();
    assert!(!r.into_inner().outputs.is_empty());
}

#[tokio::test]
async fn the_api_key_and_the_grpc_port() {
    let port = common::free_port();
    let s = common::spawn_server(&["--api-key", "k3y", "--grpc-port", &port.to_string()]).await;
    let mut c = client(s.addr).await;
    // Health is a probe: open without the key, as over HTTP.
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let e = c
        .model_infer(infer_request(SEG, &[&bus()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(infer_request(SEG, &[&bus()]));
    req.metadata_mut()
        .insert("authorization", "Bearer k3y".parse().unwrap());
    assert!(c.model_infer(req).await.is_ok());

    // The gRPC port: the same service, with its own connections.
    let mut c2 = client(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
    let mut req = tonic::Request::new(pb::ModelMetadataRequest {
        name: SEG.into(),
        version: String::new(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer k3y".parse().unwrap());
    assert_eq!(c2.model_metadata(req).await.unwrap().into_inner().name, SEG);
}

/// The raw model (`<name>-raw`, for Ultralytics' Triton client): the same configuration and
/// the same raw outputs over HTTP and gRPC, FP16 as FP32, and clear refusals.
#[tokio::test]
async fn the_raw_model_over_http_and_grpc() {
    let s = common::spawn_server(&[]).await;
    let raw = format!("{SEG}-raw");
    let http: Value = reqwest::get(s.url(&format!("/v2/models/{raw}/config")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        http["input"][0]["dims"],
        serde_json::json!([1, 3, 320, 320])
    );
    assert_eq!(http["output"][0]["dims"], serde_json::json!([1, 116, 2100]));
    assert_eq!(
        http["output"][1]["dims"],
        serde_json::json!([1, 32, 80, 80])
    );
    let metadata = http["parameters"]["metadata"]["string_value"]
        .as_str()
        .unwrap();
    assert!(
        metadata.contains("'task': 'segment'")
            && metadata.contains("'imgsz': [320, 320]")
            && metadata.contains("0: 'person'"),
        "{metadata}"
    );
    let mut c = client(s.addr).await;
    let cfg = c
        .model_config(pb::ModelConfigRequest {
            name: raw.clone(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.parameters["metadata"].string_value, metadata);
    assert_eq!(cfg.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(
        cfg.output
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["output0", "output1"]
    );
    let e = c
        .model_config(pb::ModelConfigRequest {
            name: "nope-raw".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A grey canvas, as FP32 over gRPC and HTTP, and as FP16 over gRPC.
    let n = 3 * 320 * 320;
    let grey: Vec<u8> = (0..n)
        .flat_map(|_| (114.0f32 / 255.0).to_le_bytes())
        .collect();
    let tensor = |datatype: &str, data: Vec<u8>| pb::ModelInferRequest {
        model_name: raw.clone(),
        inputs: vec![InferInputTensor {
            name: "images".into(),
            datatype: datatype.into(),
            shape: vec![1, 3, 320, 320],
            ..Default::default()
        }],
        raw_input_contents: vec![data.into()],
        ..Default::default()
    };
    let r = c
        .model_infer(tensor("FP32", grey.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, [1, 116, 2100]);
    assert_eq!(r.outputs[1].shape, [1, 32, 80, 80]);
    let (out0, out1) = (
        f32s(&r.raw_output_contents[0]),
        f32s(&r.raw_output_contents[1]),
    );
    assert_eq!((out0.len(), out1.len()), (116 * 2100, 32 * 80 * 80));
    // 114/255 in FP16 is 0x3729 (0.44678...); close to the FP32 answer, not equal.
    let half: Vec<u8> = (0..n).flat_map(|_| 0x3729u16.to_le_bytes()).collect();
    let h = c
        .model_infer(tensor("FP16", half))
        .await
        .unwrap()
        .into_inner();
    let diff = f32s(&h.raw_output_contents[0])
        .iter()
        .zip(&out0)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff > 0.0 && diff < 1.0, "FP16 vs FP32: {diff}");

    let header = serde_json::json!({
        "inputs": [{"name": "images", "shape": [1, 3, 320, 320], "datatype": "FP32",
                    "parameters": {"binary_data_size": grey.len()}}],
        "outputs": [{"name": "output1", "parameters": {"binary_data": true}},
                    {"name": "output0", "parameters": {"binary_data": true}}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&grey);
    let resp = reqwest::Client::new()
        .post(s.url(&format!("/v2/models/{raw}/infer")))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(answer["outputs"][0]["name"], "output1");
    let split = json_len + 32 * 80 * 80 * 4;
    assert_eq!(
        f32s(&bytes[json_len..split]),
        out1,
        "output1 over HTTP as over gRPC"
    );
    assert_eq!(
        f32s(&bytes[split..]),
        out0,
        "output0 over HTTP as over gRPC"
    );

    // Wrong shape, datatype, input name or data length: INVALID_ARGUMENT, and the model's
    // photo name still answers photos.
    let mut bad = tensor("FP32", grey.clone());
    bad.inputs[0].shape = vec![1, 3, 640, 640];
    let mut bad_type = tensor("INT64", grey.clone());
    bad_type.inputs[0].datatype = "INT64".into();
    let mut bad_name = tensor("FP32", grey.clone());
    bad_name.inputs[0].name = "image".into();
    for (what, req) in [
        ("shape", bad),
        ("datatype", bad_type),
        ("name", bad_name),
        ("length", tensor("FP32", grey[..100].to_vec())),
    ] {
        let e = c.model_infer(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    assert!(c.model_infer(infer_request(SEG, &[&bus()])).await.is_ok());
}
