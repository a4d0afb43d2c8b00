#!/usr/bin/python3
"""tpserve through the Open Inference Protocol, from a client that is not ours.

Stubs are generated at test time from proto/inference/grpc_service.proto by Debian's
python3-grpc-tools (and tp.v1's, to create the model with e3nn's weights); a live `tpserve`
(CPU backend) answers. Results are checked against e3nn's own numbers (../shared/reference).

    kserve_client_test.py --tpserve build/bin/tpserve --source-dir . --reference-dir ../shared/reference
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ARGS = None
TOKEN = "kserve-test-token"
CASE = "ref_mixed_parity.json"


def generate_stubs(source_dir, out_dir):
    from grpc_tools import protoc
    proto_dir = os.path.join(source_dir, "proto")
    for proto in ("inference/grpc_service.proto", "tp/v1/tensor_product.proto"):
        rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                          os.path.join(proto_dir, proto)])
        if rc != 0:
            raise RuntimeError("protoc failed on " + proto)
    sys.path.insert(0, out_dir)


class Server:
    """tpserve on a free loopback port, with a bearer token, in a temporary model directory."""

    def __init__(self, tpserve, model_dir):
        self.process = subprocess.Popen(
            [tpserve, "--listen=127.0.0.1:0", "--metrics_address=", "--backend=cpu", "--model_dir=" + model_dir,
             "--auth_token=" + TOKEN, "--shutdown_grace_seconds=1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            match = re.search(r"serving on port (\d+)", line)
            if match:
                self.port = int(match.group(1))
                return
        raise RuntimeError("tpserve did not start:\n" + "".join(lines))

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


class KserveClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc
        from inference import grpc_service_pb2, grpc_service_pb2_grpc
        from tp.v1 import tensor_product_pb2, tensor_product_pb2_grpc
        cls.grpc, cls.pb, cls.tp = grpc, grpc_service_pb2, tensor_product_pb2
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server = Server(ARGS.tpserve, cls.tmp.name)
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.server.port)
        cls.stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(cls.channel)
        cls.auth = [("authorization", "Bearer " + TOKEN)]
        with open(os.path.join(ARGS.reference_dir, CASE)) as f:
            cls.case = json.load(f)
        c = cls.case
        cls.x1 = np.array(c["x1"], dtype=np.float64)
        cls.x2 = np.array(c["x2"], dtype=np.float64)
        cls.want_out = np.array(c["out"])
        # The model, with e3nn's weights, created through tp.v1.
        models = tensor_product_pb2_grpc.ModelServiceStub(cls.channel)
        header = tensor_product_pb2.CreateModelHeader(
            name="ref", spec=tensor_product_pb2.ModelSpec(irreps_in1=c["irreps_in1"], irreps_in2=c["irreps_in2"],
                                                          irreps_out=c["irreps_out"]), upload=True)
        chunk = tensor_product_pb2.WeightsChunk(offset=0, dtype=tensor_product_pb2.DTYPE_FLOAT32,
                                                data=np.array(c["weight"], dtype="<f4").tobytes())
        models.CreateModel(iter([tensor_product_pb2.CreateModelRequest(header=header),
                                 tensor_product_pb2.CreateModelRequest(chunk=chunk)]), metadata=cls.auth, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()
        cls.tmp.cleanup()

    def request(self, datatype="FP32", raw=True, **tensors):
        pb = self.pb
        request = pb.ModelInferRequest(model_name="ref", id="py-1")
        tensors = tensors or {"x1": self.x1, "x2": self.x2}
        numpy_type = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2"}[datatype]
        for name, values in tensors.items():
            tensor = request.inputs.add(name=name, datatype=datatype, shape=list(values.shape))
            if raw:
                request.raw_input_contents.append(values.astype(numpy_type).tobytes())
            elif datatype == "FP64":
                tensor.contents.fp64_contents.extend(values.ravel().tolist())
            else:
                tensor.contents.fp32_contents.extend(values.astype(np.float32).ravel().tolist())
        return request

    def infer(self, request):
        return self.stub.ModelInfer(request, metadata=self.auth, timeout=30)

    @staticmethod
    def outputs(response):
        """name -> numpy array, from raw_output_contents or typed contents."""
        result = {}
        for i, output in enumerate(response.outputs):
            numpy_type = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2"}[output.datatype]
            if response.raw_output_contents:
                values = np.frombuffer(response.raw_output_contents[i], dtype=numpy_type)
            elif output.datatype == "FP64":
                values = np.array(output.contents.fp64_contents)
            else:
                values = np.array(output.contents.fp32_contents, dtype=np.float32)
            result[output.name] = values.reshape(list(output.shape))
        return result

    def assertClose(self, got, want, tolerance):
        error = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
        self.assertLess(error, tolerance, "max relative error %g" % error)

    def test_live_ready_and_metadata(self):
        self.assertTrue(self.stub.ServerLive(self.pb.ServerLiveRequest(), timeout=10).live)
        self.assertTrue(self.stub.ServerReady(self.pb.ServerReadyRequest(), timeout=10).ready)
        self.assertTrue(self.stub.ModelReady(self.pb.ModelReadyRequest(name="ref"), metadata=self.auth).ready)
        metadata = self.stub.ModelMetadata(self.pb.ModelMetadataRequest(name="ref"), metadata=self.auth)
        self.assertEqual([(t.name, list(t.shape)) for t in metadata.inputs],
                         [("x1", [-1, self.x1.shape[1]]), ("x2", [-1, self.x2.shape[1]])])
        self.assertEqual([(t.name, list(t.shape)) for t in metadata.outputs], [("out", [-1, self.want_out.shape[1]])])
        server = self.stub.ServerMetadata(self.pb.ServerMetadataRequest(), metadata=self.auth)
        self.assertEqual(server.name, "tpserve")

    def test_raw_fp32_matches_e3nn_and_echoes_the_id(self):
        response = self.infer(self.request("FP32", raw=True))
        self.assertEqual(response.id, "py-1")
        self.assertEqual(len(response.raw_output_contents), 1)
        out = self.outputs(response)["out"]
        self.assertEqual(out.dtype, np.float32)
        self.assertClose(out, self.want_out, 1e-5)

    def test_typed_fp64_contents_match_e3nn(self):
        response = self.infer(self.request("FP64", raw=False))
        self.assertEqual(len(response.raw_output_contents), 0)
        self.assertEqual(response.outputs[0].datatype, "FP64")
        self.assertClose(self.outputs(response)["out"], self.want_out, 1e-5)

    def test_raw_fp16_answers_fp16(self):
        x1 = self.x1.astype(np.float16).astype(np.float64)
        x2 = self.x2.astype(np.float16).astype(np.float64)
        response = self.infer(self.request("FP16", raw=True, x1=x1, x2=x2))
        out = self.outputs(response)["out"]
        self.assertEqual(out.dtype, np.float16)
        self.assertClose(out.astype(np.float64), self.want_out, 5e-2)

    def test_grad_out_input_gives_e3nns_gradients(self):
        c = self.case
        request = self.request("FP32", raw=True, x1=self.x1, x2=self.x2, grad_out=np.array(c["grad_out"]))
        for name in ("grad_x1", "grad_x2", "grad_weight"):
            request.outputs.add(name=name)
        got = self.outputs(self.infer(request))
        self.assertEqual(list(got), ["grad_x1", "grad_x2", "grad_weight"])
        self.assertClose(got["grad_x1"], np.array(c["grad_x1"]), 1e-5)
        self.assertClose(got["grad_x2"], np.array(c["grad_x2"]), 1e-5)
        self.assertClose(got["grad_weight"], np.array(c["grad_weight"]), 1e-5)

    def test_loss_parameter_gives_the_sum_tanh_weight_gradient(self):
        request = self.request("FP64", raw=False)
        request.parameters["loss"].string_param = "sum_tanh"
        request.outputs.add(name="grad_weight")
        got = self.outputs(self.infer(request))
        self.assertClose(got["grad_weight"], np.array(self.case["grad_weight_sum_tanh"]), 1e-5)

    def test_errors_carry_the_protocols_codes(self):
        grpc = self.grpc
        bad = self.request("FP32", raw=True)
        bad.inputs[0].shape[1] += 1
        with self.assertRaises(grpc.RpcError) as caught:
            self.infer(bad)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("x1", caught.exception.details())
        unknown = self.request()
        unknown.model_name = "nope"
        with self.assertRaises(grpc.RpcError) as caught:
            self.infer(unknown)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ModelInfer(self.request(), timeout=30)  # no token
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--tpserve", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--reference-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as stubs:
        generate_stubs(ARGS.source_dir, stubs)
        result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() and result.testsRun > 0 else 1)


if __name__ == "__main__":
    main()
