"""tpserve.Client: every RPC of tp.v1.ModelService, tp.v1.TensorProductService and
tp.v1.NetworkService, numpy in and out.

One Client holds one gRPC channel and may be shared by threads. Every call has a deadline (the
client's `timeout`, or the call's own), sends the bearer token when one is set, and raises a
TpServeError subclass carrying the gRPC status code when it fails. Idempotent calls (Forward,
GetModel, ListModels, DownloadWeights, Predict) are retried on UNAVAILABLE with exponential backoff, within
the same deadline; see retry.py for why the others are not.
"""

import collections
import threading
import time

import grpc
import numpy as np

from ._stubs import pb, pb_grpc
from .errors import ProtocolError, error_from_code, error_from_rpc
from .messages import (StreamForward, backward_request, backward_result, forward_request, forward_result, graph_batch,
                       train_step_result)
from .results import ModelInfo
from .retry import NO_RETRIES, RetryPolicy, remaining_s
from .tensors import ChunkAssembler, check_vector, decode_tensor, encode_tensor, weight_chunks, wire_dtype

_DEFAULT = object()  # "use the client's setting" (None means "no deadline")

# gRPC's TCP reads start at 8 KB and grow slowly; tensor-sized messages arrive in far fewer reads
# from 1 MB (the same arguments tpserve and the C++ client set: wire/channel_tuning.h).
_TENSOR_CHANNEL_ARGS = (
    ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
    ("grpc.experimental.tcp_min_read_chunk_size", 1 << 20),
    ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
)


class Client:
    """A connection to one tpserve.

    target: "host:port" (or any gRPC target, e.g. "dns:///name:port").
    token: sent as "authorization: Bearer <token>" on every call.
    tls / root_certificates: a TLS channel; root_certificates is PEM bytes or a file path (None:
        the system's roots). Passing root_certificates implies tls. tls_server_name overrides the
        name checked in the server's certificate.
    timeout: seconds per unary call and per weight transfer (None: no deadline).
    stream_timeout: seconds for a whole Stream call (None: no deadline).
    retry: RetryPolicy for the idempotent calls (tpserve.NO_RETRIES to switch retries off).
    wait_for_ready: calls wait (within their deadline) for the server to become reachable instead
        of failing at once with UNAVAILABLE.
    chunk_elements: elements per uploaded weights chunk.
    reconnect_backoff_max_s: longest pause between the channel's reconnection attempts (gRPC's
        default is 120 s; shorter lets retries reach a restarted server soon).
    """

    def __init__(self, target, *, token=None, tls=False, root_certificates=None, tls_server_name=None,
                 timeout=30.0, stream_timeout=600.0, retry=None, wait_for_ready=False,
                 chunk_elements=262144, max_message_bytes=64 << 20, reconnect_backoff_max_s=2.0,
                 channel_options=()):
        if chunk_elements < 1:
            raise ValueError("chunk_elements must be >= 1")
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.wait_for_ready = wait_for_ready
        self.chunk_elements = int(chunk_elements)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._retries = 0
        self._retries_lock = threading.Lock()

        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", int(reconnect_backoff_max_s * 1000)),
                   *_TENSOR_CHANNEL_ARGS]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        options.extend(channel_options)
        if tls or root_certificates is not None:
            if isinstance(root_certificates, str):
                with open(root_certificates, "rb") as pem:
                    root_certificates = pem.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._compute = pb_grpc.TensorProductServiceStub(self._channel)
        self._networks = pb_grpc.NetworkServiceStub(self._channel)
        # Watching the channel's state also works around a hang in grpcio 1.51 (Debian 12): a
        # server-streaming or bidirectional call started just as the server goes away could wait
        # forever, past its deadline, unless something watches the channel's connectivity
        # (test_retries.py restarts servers under such calls).
        self._state = grpc.ChannelConnectivity.IDLE
        self._channel.subscribe(self._on_state, try_to_connect=False)

    # ---- lifecycle ----

    def close(self):
        self._channel.unsubscribe(self._on_state)
        self._channel.close()

    def _on_state(self, state):
        self._state = state

    @property
    def state(self):
        """The channel's connectivity (grpc.ChannelConnectivity: IDLE, CONNECTING, READY, ...)."""
        return self._state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def retry_count(self):
        """Retries made so far by this client (all calls together)."""
        return self._retries

    def wait_until_ready(self, timeout=10.0):
        """Blocks until the channel connects; raises Unavailable when it does not within `timeout`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise error_from_code(grpc.StatusCode.UNAVAILABLE, f"no connection to {self.target} within {timeout} s",
                                  "connect") from None

    # ---- the one place calls are made: deadline, token, retries, status -> exception ----

    def _call(self, method, attempt, *, idempotent, timeout, wait_for_ready=None):
        """Runs attempt(timeout_s, metadata, wait_for_ready) -> result, retrying idempotent calls."""
        timeout = self.timeout if timeout is _DEFAULT else timeout
        wait = self.wait_for_ready if wait_for_ready is None else wait_for_ready
        policy = self.retry if idempotent else NO_RETRIES
        deadline = None if timeout is None else time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            left = remaining_s(deadline)
            try:
                return attempt(left, self._metadata, wait)
            except grpc.RpcError as error:
                code = error.code()
                left = remaining_s(deadline)
                backoff = policy.backoff_s(attempts - 1)
                if (attempts >= policy.max_attempts or code not in policy.retryable_codes or
                        (left is not None and left <= backoff)):
                    raise error_from_rpc(error, method, attempts) from error
            with self._retries_lock:
                self._retries += 1
            time.sleep(backoff)

    # ---- ModelService ----

    def create_model(self, name, irreps_in1, irreps_in2, irreps_out, *, weights=None, seed=None,
                     timeout=_DEFAULT):
        """Creates a model: weights drawn with `seed` (e3nn's N(0, 1) initialization; seed 0 when
        neither is given), or `weights` uploaded (a flat vector in e3nn's layout, any float dtype)."""
        if weights is not None and seed is not None:
            raise ValueError("create_model: pass weights or seed, not both")
        header = pb.CreateModelHeader(name=name, spec=pb.ModelSpec(irreps_in1=irreps_in1, irreps_in2=irreps_in2,
                                                                   irreps_out=irreps_out))
        if weights is not None:
            weights = check_vector(weights, "weights")
            header.upload = True
        else:
            header.seed = 0 if seed is None else int(seed)

        def messages():
            yield pb.CreateModelRequest(header=header)
            if weights is not None:
                for chunk in weight_chunks(weights, self.chunk_elements):
                    yield pb.CreateModelRequest(chunk=chunk)

        def attempt(left, metadata, wait):
            return self._models.CreateModel(messages(), timeout=left, metadata=metadata, wait_for_ready=wait)
        return ModelInfo.from_proto(self._call("CreateModel", attempt, idempotent=False, timeout=timeout))

    def create_qm9_model(self, name, lmax, mul, *, layers=0, num_elements=0, num_targets=0, seed=None,
                         timeout=_DEFAULT):
        """Creates a QM9 network model (kind "qm9"): lmax 1 or 2, `mul` copies of every hidden irrep,
        `layers` (0: the server's 6), num_elements (0: 5, H C N O F), num_targets (0: 4); parameters
        drawn with `seed` (0 when not given). The returned ModelInfo's qm9 holds the structure."""
        header = pb.CreateModelHeader(name=name, seed=0 if seed is None else int(seed),
                                      qm9=pb.Qm9Spec(lmax=int(lmax), mul=int(mul), layers=int(layers),
                                                     num_elements=int(num_elements),
                                                     num_targets=int(num_targets)))

        def attempt(left, metadata, wait):
            return self._models.CreateModel(iter([pb.CreateModelRequest(header=header)]), timeout=left,
                                            metadata=metadata, wait_for_ready=wait)
        return ModelInfo.from_proto(self._call("CreateModel", attempt, idempotent=False, timeout=timeout))

    def get_model(self, name, *, timeout=_DEFAULT):
        def attempt(left, metadata, wait):
            return self._models.GetModel(pb.GetModelRequest(name=name), timeout=left, metadata=metadata,
                                         wait_for_ready=wait)
        return ModelInfo.from_proto(self._call("GetModel", attempt, idempotent=True, timeout=timeout))

    def list_models(self, *, timeout=_DEFAULT):
        def attempt(left, metadata, wait):
            return self._models.ListModels(pb.ListModelsRequest(), timeout=left, metadata=metadata,
                                           wait_for_ready=wait)
        response = self._call("ListModels", attempt, idempotent=True, timeout=timeout)
        return [ModelInfo.from_proto(info) for info in response.models]

    def delete_model(self, name, *, timeout=_DEFAULT):
        def attempt(left, metadata, wait):
            return self._models.DeleteModel(pb.DeleteModelRequest(name=name), timeout=left, metadata=metadata,
                                            wait_for_ready=wait)
        self._call("DeleteModel", attempt, idempotent=False, timeout=timeout)

    def upload_weights(self, name, weights, *, expected_version=0, timeout=_DEFAULT):
        """Replaces the weights atomically (flat vector in e3nn's layout, any float dtype; the server
        keeps float32). expected_version != 0: FailedPrecondition unless the model is still there."""
        weights = check_vector(weights, "weights")

        def messages():
            for index, chunk in enumerate(weight_chunks(weights, self.chunk_elements)):
                if index == 0:
                    yield pb.UploadWeightsRequest(model=name, expected_version=expected_version, chunk=chunk)
                else:
                    yield pb.UploadWeightsRequest(chunk=chunk)

        def attempt(left, metadata, wait):
            return self._models.UploadWeights(messages(), timeout=left, metadata=metadata, wait_for_ready=wait)
        return ModelInfo.from_proto(self._call("UploadWeights", attempt, idempotent=False, timeout=timeout))

    def _read_chunks(self, rpc, request, what, idempotent, timeout):
        def attempt(left, metadata, wait):
            assembler = ChunkAssembler(what)  # a retry starts the vector over
            for chunk in rpc(request, timeout=left, metadata=metadata, wait_for_ready=wait):
                assembler.add(chunk)
            return assembler.result()
        return self._call(what, attempt, idempotent=idempotent, timeout=timeout)

    def download_weights(self, name, *, chunk_elements=0, timeout=_DEFAULT):
        """The model's weights: float32 [weight_numel], e3nn's flat layout."""
        return self._read_chunks(self._models.DownloadWeights,
                                 pb.DownloadWeightsRequest(model=name, chunk_elements=chunk_elements),
                                 "DownloadWeights", True, timeout)

    def get_gradient(self, name, *, chunk_elements=0, timeout=_DEFAULT):
        """The gradient buffer (sum of every backward with weight_grad='accumulate' since the last
        zero_gradient): float32 [weight_numel]."""
        return self._read_chunks(self._models.GetGradient,
                                 pb.GetGradientRequest(model=name, chunk_elements=chunk_elements),
                                 "GetGradient", False, timeout)

    def zero_gradient(self, name, *, timeout=_DEFAULT):
        def attempt(left, metadata, wait):
            return self._models.ZeroGradient(pb.ZeroGradientRequest(model=name), timeout=left, metadata=metadata,
                                             wait_for_ready=wait)
        self._call("ZeroGradient", attempt, idempotent=False, timeout=timeout)

    def sgd_step(self, name, learning_rate, *, zero_gradient=False, timeout=_DEFAULT):
        """weights -= learning_rate * gradient, committed to the server's disk before it answers."""
        request = pb.SgdStepRequest(model=name, learning_rate=learning_rate, zero_gradient=zero_gradient)

        def attempt(left, metadata, wait):
            return self._models.SgdStep(request, timeout=left, metadata=metadata, wait_for_ready=wait)
        return ModelInfo.from_proto(self._call("SgdStep", attempt, idempotent=False, timeout=timeout))

    # ---- TensorProductService ----

    def forward_with_info(self, model, x1, x2, *, output_dtype=None, precision=None, timeout=_DEFAULT,
                          wait_for_ready=None):
        """out = TP(x1, x2) with the model's weights, plus the version, launch size and device."""
        request = forward_request(model, x1, x2, output_dtype, precision)

        def attempt(left, metadata, wait):
            return self._compute.Forward(request, timeout=left, metadata=metadata, wait_for_ready=wait)
        return forward_result(self._call("Forward", attempt, idempotent=True, timeout=timeout,
                                         wait_for_ready=wait_for_ready))

    def forward(self, model, x1, x2, *, output_dtype=None, precision=None, timeout=_DEFAULT, wait_for_ready=None):
        """out [batch, dim_out] = TP(x1 [batch, dim_in1], x2 [batch, dim_in2]), in x1's dtype unless
        output_dtype says otherwise (float32, float64, float16, or 'bfloat16' returned as float32)."""
        return self.forward_with_info(model, x1, x2, output_dtype=output_dtype, precision=precision,
                                      timeout=timeout, wait_for_ready=wait_for_ready).out

    def backward(self, model, x1, x2, *, grad_out=None, loss=None, want_grad_x1=False, want_grad_x2=False,
                 want_out=False, weight_grad=None, output_dtype=None, precision=None, timeout=_DEFAULT):
        """Vector-Jacobian products for one cotangent: grad_out [batch, dim_out], or loss 'sum' /
        'sum_tanh'. weight_grad: None, 'return' (inline; large models need backward_chunked) or
        'accumulate' (into the server's gradient buffer). Never retried."""
        request = backward_request(model, x1, x2, grad_out, loss, want_grad_x1, want_grad_x2, want_out,
                                   weight_grad, output_dtype, precision)

        def attempt(left, metadata, wait):
            return self._compute.Backward(request, timeout=left, metadata=metadata, wait_for_ready=wait)
        return backward_result(self._call("Backward", attempt, idempotent=False, timeout=timeout))

    def backward_chunked(self, model, x1, x2, *, grad_out=None, loss=None, want_grad_x1=False,
                         want_grad_x2=False, want_out=False, weight_grad="return", output_dtype=None,
                         precision=None, timeout=_DEFAULT):
        """backward() whose weight gradient comes back in chunks (any model size), reassembled into
        result.grad_weight (float32 [weight_numel])."""
        request = backward_request(model, x1, x2, grad_out, loss, want_grad_x1, want_grad_x2, want_out,
                                   weight_grad, output_dtype, precision)

        def attempt(left, metadata, wait):
            first = None
            assembler = ChunkAssembler("BackwardChunked")
            for response in self._compute.BackwardChunked(request, timeout=left, metadata=metadata,
                                                          wait_for_ready=wait):
                if first is None:
                    first = response
                elif response.HasField("grad_weight_chunk"):
                    assembler.add(response.grad_weight_chunk)
            if first is None:
                raise ProtocolError("BackwardChunked: the stream ended without a response")
            grad_weight = assembler.result() if weight_grad == "return" else None
            return backward_result(first, grad_weight)
        return self._call("BackwardChunked", attempt, idempotent=False, timeout=timeout)

    def echo(self, payload=b"", *, response_bytes=0, timeout=_DEFAULT):
        """The payload back (or response_bytes zero bytes): the transport alone, no compute."""
        request = pb.EchoRequest(payload=payload, response_bytes=response_bytes)

        def attempt(left, metadata, wait):
            return self._compute.Echo(request, timeout=left, metadata=metadata, wait_for_ready=wait)
        return self._call("Echo", attempt, idempotent=False, timeout=timeout).payload

    # ---- NetworkService: network models (kind "qm9") on graph batches ----

    def predict(self, model, species, positions, edge_src, edge_dst, graph_index, num_graphs, *,
                output_dtype=None, timeout=_DEFAULT):
        """The network's outputs [num_graphs, num_targets] (float64 unless output_dtype=float32) for a
        batch of graphs: nodes of all graphs concatenated (species [n] ints, positions [n, 3]
        Angstrom, graph_index [n] the graph of each node), directed edges edge_src -> edge_dst (give
        both directions of a bond). Read-only, so retried like Forward."""
        request = pb.PredictRequest(
            model=model, graphs=graph_batch(species, positions, edge_src, edge_dst, graph_index, num_graphs),
            output_dtype=wire_dtype(output_dtype))

        def attempt(left, metadata, wait):
            return self._networks.Predict(request, timeout=left, metadata=metadata, wait_for_ready=wait)
        return decode_tensor(self._call("Predict", attempt, idempotent=True, timeout=timeout).outputs, "outputs")

    def train_step_with_info(self, model, species, positions, edge_src, edge_dst, graph_index, num_graphs,
                             targets, *, learning_rate=1e-2, momentum=0.9, expected_version=0, timeout=_DEFAULT):
        """train_step() returning a TrainStepResult (loss, committed version, predictions before the
        update)."""
        targets = np.ascontiguousarray(targets, dtype=np.float64)
        request = pb.TrainStepRequest(
            model=model, graphs=graph_batch(species, positions, edge_src, edge_dst, graph_index, num_graphs),
            targets=encode_tensor(targets, "targets"), learning_rate=float(learning_rate),
            momentum=float(momentum), expected_version=int(expected_version))

        def attempt(left, metadata, wait):
            return self._networks.TrainStep(request, timeout=left, metadata=metadata, wait_for_ready=wait)
        # Never retried: a step that failed on the client's side may have been applied (retry.py).
        return train_step_result(self._call("TrainStep", attempt, idempotent=False, timeout=timeout))

    def train_step(self, model, species, positions, edge_src, edge_dst, graph_index, num_graphs, targets, *,
                   learning_rate=1e-2, momentum=0.9, expected_version=0, timeout=_DEFAULT):
        """One step of SGD with momentum on the L1 loss against targets [num_graphs, num_targets],
        applied and saved on the server; returns the batch's loss before the update (float)."""
        return self.train_step_with_info(model, species, positions, edge_src, edge_dst, graph_index, num_graphs,
                                         targets, learning_rate=learning_rate, momentum=momentum,
                                         expected_version=expected_version, timeout=timeout).loss

    # ---- Stream: a window of requests in flight, results in order ----

    def stream(self, requests, *, window=16, timeout=_DEFAULT, return_exceptions=False):
        """Sends StreamForward / StreamBackward / StreamEcho ops over one Stream call, keeping at most
        `window` unanswered, and yields their results in request order (ForwardResult,
        BackwardResult, bytes). A failed request raises its TpServeError at its place in the order
        (the stream is then cancelled), or is yielded as the exception with return_exceptions=True.
        `requests` may be a generator: it is read as the window allows, from gRPC's sending thread.
        Leaving the loop early cancels the call."""
        window = int(window)
        if window < 1:
            raise ValueError("stream: window must be >= 1")
        timeout = self.stream_timeout if timeout is _DEFAULT else timeout
        free_slots = threading.Semaphore(window)
        finished = threading.Event()
        sent = collections.deque()  # (request_id, op), appended before the request leaves
        feed_errors = []

        def messages():
            try:
                for request_id, op in enumerate(requests):
                    message = pb.StreamRequest(request_id=request_id)
                    op.fill(message)  # encodes (and checks) before waiting for a slot
                    while not free_slots.acquire(timeout=0.05):
                        if finished.is_set():
                            return
                    if finished.is_set():
                        return
                    sent.append((request_id, op))
                    yield message
            except Exception as error:  # noqa: BLE001 - re-raised in the caller's thread below
                feed_errors.append(error)

        call = self._compute.Stream(messages(), timeout=timeout, metadata=self._metadata,
                                    wait_for_ready=self.wait_for_ready)
        try:
            for response in call:
                if not sent:
                    raise ProtocolError(f"Stream: response {response.request_id} to no outstanding request")
                request_id, op = sent.popleft()
                free_slots.release()
                if response.request_id != request_id:
                    raise ProtocolError(f"Stream: response for request {response.request_id} where "
                                        f"{request_id} was next (responses must come in request order)")
                if response.code != 0:
                    error = error_from_code(response.code, response.message, f"Stream[{request_id}]")
                    if not return_exceptions:
                        raise error
                    yield error
                else:
                    yield op.result(response)
            if feed_errors:  # the requests iterable raised (or an op failed its checks): the stream
                raise feed_errors[0]  # was closed after what had been sent, answered above
            if sent:
                raise ProtocolError(f"Stream: ended with {len(sent)} requests unanswered")
        except grpc.RpcError as error:
            if feed_errors:
                raise feed_errors[0] from error
            raise error_from_rpc(error, "Stream") from error
        finally:
            finished.set()
            call.cancel()  # no-op once the call has ended

    def stream_forward(self, model, batches, *, window=16, output_dtype=None, precision=None, timeout=_DEFAULT):
        """Forward over a Stream for each (x1, x2) of `batches`; yields the out arrays in order."""
        ops = (StreamForward(model, x1, x2, output_dtype, precision) for x1, x2 in batches)
        for result in self.stream(ops, window=window, timeout=timeout):
            yield result.out
