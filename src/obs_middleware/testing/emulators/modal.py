"""A local Modal control plane: the real ``modal`` SDK calls deployed functions on loopback.

Speaks Modal's gRPC API (grpclib, HTTP/2) through the servicer base the ``modal`` wheel ships
(``modal_proto.api_grpc.ModalClientBase`` patched by ``modal._utils.grpc_testing``): enough of
``FunctionGet``, ``FunctionMap``, ``FunctionGetOutputs`` and ``FunctionCallGetDataOut`` for
``Function.from_name(...).remote()``, ``.remote.aio()``, ``.spawn()`` + ``FunctionCall.get()``
and ``.remote_gen()`` to complete. Registered Python callables run in the emulator's threads::

    with ModalEmulator() as modal_emu, modal_emu.use():
        modal_emu.register("images", "render", lambda prompt: {"ok": True}, gpu="A100-80GB")
        modal.Function.from_name("images", "render").remote("a cat")

Knobs: ``queue_s`` (time before an input starts) and ``latency_s`` (run time, added to the
callable's own) per emulator or per function; a callable that raises fails the call with that
exception; raise ``RemoteTimeout`` or ``RemoteInternalFailure`` for Modal's timeout and internal
failure statuses; a generator function streams its items to ``remote_gen()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf import empty_pb2  # type: ignore[import-untyped]
from grpclib import GRPCError, Status
from grpclib.server import Server, Stream
from modal._serialization import deserialize, serialize
from modal._utils.grpc_testing import patch_mock_servicer
from modal.client import _Client
from modal_proto import api_grpc, api_pb2

__all__ = ["ModalEmulator", "RemoteInternalFailure", "RemoteTimeout"]

_SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
_FAILURE = api_pb2.GenericResult.GENERIC_STATUS_FAILURE
_TIMEOUT = api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT
_INTERNAL = api_pb2.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE
_PICKLE = api_pb2.DATA_FORMAT_PICKLE


class RemoteTimeout(Exception):
    """Raise in a registered function to end its call with Modal's timeout status."""


class RemoteInternalFailure(Exception):
    """Raise in a registered function to end its call with Modal's internal-failure status."""


@dataclass
class _Deployed:
    function_id: str
    app: str
    name: str
    fn: Callable[..., Any]
    gpu: str | None
    gpu_count: int
    cpu: float
    memory_mib: int
    queue_s: float | None
    latency_s: float | None

    @property
    def generator(self) -> bool:
        return inspect.isgeneratorfunction(self.fn)


@dataclass
class _Call:
    function_call_id: str
    function: _Deployed
    input_id: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    chunk: asyncio.Event = field(default_factory=asyncio.Event)
    output: api_pb2.FunctionGetOutputsItem | None = None
    chunks: list[api_pb2.DataChunk] = field(default_factory=list)
    cancelled: bool = False


@patch_mock_servicer
class _Servicer(api_grpc.ModalClientBase):
    """The RPCs the SDK's call paths need; every other RPC answers UNIMPLEMENTED."""

    def __init__(self, emulator: ModalEmulator) -> None:
        self.emu = emulator
        self.calls: dict[str, _Call] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.ids = itertools.count(1)

    # -- session ---------------------------------------------------------------------------------
    async def ClientHello(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def AuthTokenGet(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.AuthTokenGetResponse(token=""))

    # -- lookup ----------------------------------------------------------------------------------
    async def FunctionGet(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.emu.requests.append(("FunctionGet", request))
        deployed = self.emu._functions.get((request.app_name, request.object_tag))
        if deployed is None:
            raise GRPCError(
                Status.NOT_FOUND,
                f"Function {request.object_tag!r} not found in app {request.app_name!r}",
            )
        await stream.send_message(
            api_pb2.FunctionGetResponse(
                function_id=deployed.function_id,
                handle_metadata=_metadata(deployed),
                function=_function_data(deployed),
            )
        )

    async def FunctionGetById(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        for deployed in self.emu._functions.values():
            if deployed.function_id == request.function_id:
                await stream.send_message(
                    api_pb2.FunctionGetByIdResponse(
                        function=_function_data(deployed), handle_metadata=_metadata(deployed)
                    )
                )
                return
        raise GRPCError(Status.NOT_FOUND, f"Function {request.function_id!r} not found")

    # -- calls -----------------------------------------------------------------------------------
    async def FunctionMap(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.emu.requests.append(("FunctionMap", request))
        deployed = next(
            (f for f in self.emu._functions.values() if f.function_id == request.function_id),
            None,
        )
        if deployed is None:
            raise GRPCError(Status.NOT_FOUND, f"Function {request.function_id!r} not found")
        n = next(self.ids)
        call = _Call(f"fc-emu{n:08d}", deployed, f"in-emu{n:08d}")
        self.calls[call.function_call_id] = call
        item = request.pipelined_inputs[0]
        task = asyncio.get_running_loop().create_task(self._execute(call, item.input))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        await stream.send_message(
            api_pb2.FunctionMapResponse(
                function_call_id=call.function_call_id,
                function_call_jwt=f"jwt-{call.function_call_id}",
                pipelined_inputs=[
                    api_pb2.FunctionPutInputsResponseItem(
                        idx=item.idx, input_id=call.input_id, input_jwt=f"jwt-{call.input_id}"
                    )
                ],
            )
        )

    async def FunctionGetOutputs(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.emu.requests.append(("FunctionGetOutputs", request))
        call = self.calls.get(request.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {request.function_call_id!r}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(call.done.wait(), max(request.timeout, 0.0))
        if call.output is None:
            response = api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=1)
        else:
            response = api_pb2.FunctionGetOutputsResponse(
                outputs=[call.output], idxs=[0], num_unfinished_inputs=0
            )
        await stream.send_message(response)

    async def FunctionCallGetDataOut(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        call = self.calls.get(request.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {request.function_call_id!r}")
        sent = request.last_index
        while True:
            for chunk in call.chunks[sent:]:
                await stream.send_message(chunk)
                sent = chunk.index
            if call.done.is_set() and sent >= len(call.chunks):
                return
            call.chunk.clear()
            waiters = [
                asyncio.ensure_future(call.chunk.wait()),
                asyncio.ensure_future(call.done.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def FunctionCallCancel(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        call = self.calls.get(request.function_call_id)
        if call is not None:
            call.cancelled = True
        await stream.send_message(empty_pb2.Empty())

    async def _execute(self, call: _Call, payload: api_pb2.FunctionInput) -> None:
        deployed = call.function
        emu = self.emu
        loop = asyncio.get_running_loop()
        await asyncio.sleep(deployed.queue_s if deployed.queue_s is not None else emu.queue_s)
        started = time.time()
        try:
            args, kwargs = deserialize(payload.args, None)
            run = _run_generator if deployed.generator else _run_function
            value = await loop.run_in_executor(None, run, deployed, args, kwargs, call, loop)
            await asyncio.sleep(
                deployed.latency_s if deployed.latency_s is not None else emu.latency_s
            )
            result = api_pb2.GenericResult(status=_SUCCESS, data=value)
            data_format = api_pb2.DATA_FORMAT_GENERATOR_DONE if deployed.generator else _PICKLE
        except Exception as exc:
            result = _failure(exc)
            data_format = _PICKLE
        call.output = api_pb2.FunctionGetOutputsItem(
            result=result,
            idx=0,
            input_id=call.input_id,
            data_format=data_format,
            task_id="ta-emulator",
            input_started_at=started,
            output_created_at=time.time(),
        )
        call.done.set()


def _run_function(
    deployed: _Deployed,
    args: Any,
    kwargs: Any,
    _call: _Call,
    _loop: asyncio.AbstractEventLoop,
) -> bytes:
    return bytes(serialize(deployed.fn(*args, **kwargs)))


def _run_generator(
    deployed: _Deployed,
    args: Any,
    kwargs: Any,
    call: _Call,
    loop: asyncio.AbstractEventLoop,
) -> bytes:
    count = 0
    for item in deployed.fn(*args, **kwargs):
        count += 1
        chunk = api_pb2.DataChunk(data_format=_PICKLE, data=serialize(item), index=count)
        loop.call_soon_threadsafe(_push_chunk, call, chunk)
    return bytes(api_pb2.GeneratorDone(items_total=count).SerializeToString())


def _push_chunk(call: _Call, chunk: api_pb2.DataChunk) -> None:
    call.chunks.append(chunk)
    call.chunk.set()


def _failure(exc: Exception) -> api_pb2.GenericResult:
    text = "".join(traceback.format_exception(exc))
    if isinstance(exc, RemoteTimeout):
        return api_pb2.GenericResult(status=_TIMEOUT, exception=str(exc) or "timed out")
    if isinstance(exc, RemoteInternalFailure):
        return api_pb2.GenericResult(status=_INTERNAL, exception=str(exc) or "internal failure")
    try:
        data = serialize(exc)
    except Exception:  # an exception that does not pickle: the client raises RemoteError
        data = b""
    return api_pb2.GenericResult(status=_FAILURE, exception=repr(exc), traceback=text, data=data)


def _metadata(deployed: _Deployed) -> api_pb2.FunctionHandleMetadata:
    return api_pb2.FunctionHandleMetadata(
        function_name=deployed.name,
        function_type=(
            api_pb2.Function.FUNCTION_TYPE_GENERATOR
            if deployed.generator
            else api_pb2.Function.FUNCTION_TYPE_FUNCTION
        ),
        app_id="ap-emulator",
    )


def _function_data(deployed: _Deployed) -> api_pb2.FunctionData:
    resources = api_pb2.Resources(
        milli_cpu=int(deployed.cpu * 1000),
        memory_mb=deployed.memory_mib,
        gpu_config=(
            api_pb2.GPUConfig(gpu_type=deployed.gpu, count=deployed.gpu_count)
            if deployed.gpu
            else api_pb2.GPUConfig()
        ),
    )
    function = api_pb2.Function(function_name=deployed.name, resources=resources)
    return api_pb2.FunctionData(
        function_name=deployed.name,
        ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=function)],
    )


class ModalEmulator:
    """A loopback Modal control plane serving registered functions (see the module docstring).

    ``url`` is set once started (``start()`` or ``with``); ``requests`` lists the ``(rpc,
    request)`` pairs received; ``servicer.intercept()`` (Modal's own test helper) can script
    responses.
    """

    def __init__(self, *, queue_s: float = 0.0, latency_s: float = 0.0, port: int = 0) -> None:
        self.queue_s = queue_s
        self.port = port
        self.latency_s = latency_s
        self.url = ""
        self.requests: list[tuple[str, Any]] = []
        self.servicer = _Servicer(self)  # type: ignore[abstract]  # filled by patch_mock_servicer
        self._functions: dict[tuple[str, str], _Deployed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def register(
        self,
        app: str,
        name: str,
        fn: Callable[..., Any],
        *,
        gpu: str | None = None,
        gpu_count: int = 1,
        cpu: float = 0.125,
        memory_mib: int = 128,
        queue_s: float | None = None,
        latency_s: float | None = None,
    ) -> None:
        """Deploy ``fn`` as ``app``/``name``, with the resources ``Function.info()`` reports."""
        function_id = f"fu-emu{len(self._functions) + 1:08d}"
        self._functions[(app, name)] = _Deployed(
            function_id, app, name, fn, gpu, gpu_count, cpu, memory_mib, queue_s, latency_s
        )

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the ``modal`` SDK here (placeholder credentials)."""
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": "ak-emulator",
            "MODAL_TOKEN_SECRET": "as-emulator",
        }

    @contextlib.contextmanager
    def use(self) -> Iterator[dict[str, str]]:
        """Set ``env`` in ``os.environ`` for a block, and drop Modal's cached client around it.

        ``modal.Client.from_env()`` caches one client per process; a client left pointing at
        another server (or at a stopped emulator) would be reused otherwise.
        """
        saved = {k: os.environ.get(k) for k in self.env}
        _drop_env_client()
        os.environ.update(self.env)
        try:
            yield self.env
        finally:
            _drop_env_client()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start(self) -> str:
        """Serve on 127.0.0.1 (a free port) from a background thread; returns ``url``."""
        if self._thread is not None:
            return self.url
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                # grpclib binds the server to the loop current at construction: build it here.
                self._server = loop.run_until_complete(self._bind())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=serve, name="modal-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self.url

    async def _bind(self) -> Server:
        server = Server([self.servicer])
        await server.start("127.0.0.1", self.port)
        listening = cast("asyncio.Server", server._server)
        self.port = listening.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return server

    async def _close(self) -> None:
        for task in list(self.servicer.tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._thread = None

    def __enter__(self) -> ModalEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drop_env_client() -> None:
    """Close and forget ``modal.Client.from_env()``'s cached client, if any."""
    client = _Client._client_from_env
    if client is None:
        return
    loop = client._cancellation_context_event_loop
    try:
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(5)
    except Exception:  # a client we cannot close cleanly is still dropped
        pass
    _Client._set_env_client(None)


def _main(argv: list[str] | None = None) -> None:
    """Serve demo functions (``obs-demo``/``echo`` and ``render``) until interrupted."""
    parser = argparse.ArgumentParser(description="Modal control-plane emulator on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="run time added per call")
    args = parser.parse_args(argv)
    with ModalEmulator(port=args.port, latency_s=args.latency) as emulator:
        emulator.register("obs-demo", "echo", lambda *a, **k: {"args": a, "kwargs": k})
        emulator.register("obs-demo", "render", _render, gpu="A100-80GB")
        for key, value in emulator.env.items():
            print(f"export {key}={value}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def _render(prompt: str, steps: int = 4) -> dict[str, Any]:
    return {"prompt": prompt, "steps": steps, "image": b"\x89PNG" + bytes(64)}


if __name__ == "__main__":
    _main()
