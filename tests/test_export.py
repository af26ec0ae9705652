"""Export: SavedModel for TF Serving, TFLite for LiteRT, and their runners."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, random_images

import serve_signature
from keras_vae.export import export_all, runner, saved_model
from keras_vae.export.signatures import SIGNATURE_NAMES
from keras_vae.export.tflite import INT8_SIGNATURES
from keras_vae.vae import VAE

LATENT = 6


def _subprocess(code, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


# A meta-path hook: the named top-level packages can be located (TensorFlow
# looks keras up at import time) but importing them raises ImportError.
BLOCK_IMPORTS = """
import importlib.machinery, sys
class BlockedLoader:
    def create_module(self, spec):
        raise ImportError(f"blocked: {spec.name}")
    def exec_module(self, module):
        raise ImportError(f"blocked: {module.__name__}")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None:
                spec.loader = BlockedLoader()
            return spec
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    model = VAE(latent_dim=LATENT, seed=0)
    model.compile("adam")
    model.fit(random_images(256), batch_size=64, epochs=1, verbose=0)
    images = (random_images(40, seed=1) * 255).astype(np.uint8)
    model.save(str(out / "model.keras"))
    paths = export_all(model, str(out), "vae", images)
    z = np.random.default_rng(2).standard_normal((3, LATENT)).astype(np.float32)
    inputs = {
        "serving_default": {"images": images[:3]},
        "decode": {"z": z},
        "reconstruct": {"images": images[:3]},
        "generate": {"count": np.array(3, np.int32)},
        "generate_from_noise": {"noise": z},
        "score": {"images": images[:3]},
    }
    return model, paths, inputs, out


def expected_outputs(model, inputs):
    """The in-memory model's answers for the deterministic signatures."""
    x = inputs["score"]["images"].astype(np.float32) / 255.0
    z_mean, z_log_var = model.encode(x)
    terms = model.negative_elbo(x, sample=False)
    decoded = model.decode(inputs["decode"]["z"])
    return {
        "serving_default": {"z_mean": z_mean.numpy(), "z_log_var": z_log_var.numpy()},
        "decode": {k: v.numpy() for k, v in decoded.items()},
        "reconstruct": {"reconstruction": model.reconstruct(x).numpy()},
        "generate_from_noise": {"images": decoded["mean"].numpy(), "z": inputs["decode"]["z"]},
        "score": {
            "negative_elbo": terms["loss"].numpy(),
            "reconstruction": terms["reconstruction"].numpy(),
            "kl": terms["kl"].numpy(),
        },
    }


def _save_inputs(path, inputs):
    np.savez(path, **{f"{s}/{k}": v for s, d in inputs.items() for k, v in d.items()})


RUN_ALL = """
import numpy as np, sys
flat = np.load(sys.argv[2])
inputs = {}
for key in flat.files:
    sig, name = key.split("/")
    inputs.setdefault(sig, {})[name] = flat[key]
outputs = {}
for sig, tensors in inputs.items():
    for name, value in run(sig, tensors).items():
        outputs[f"{sig}/{name}"] = np.asarray(value)
np.savez(sys.argv[3], **outputs)
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in WATCH))
"""


def _load_outputs(path):
    flat = np.load(path)
    outputs = {}
    for key in flat.files:
        sig, name = key.split("/")
        outputs.setdefault(sig, {})[name] = flat[key]
    return outputs


def test_layout_and_versions(exported):
    _, paths, _, out = exported
    assert paths["saved_model"] == str(out / "saved_model" / "vae" / "1")
    assert saved_model.existing_versions(str(out / "saved_model" / "vae")) == [1]
    for path in paths["tflite"].values():
        assert path.startswith(str(out / "tflite" / "vae" / "1"))
        assert os.path.getsize(path) > 10_000
    sizes = {k: os.path.getsize(v) for k, v in paths["tflite"].items()}
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_saved_model_in_a_tensorflow_only_process(exported, tmp_path):
    model, paths, inputs, _ = exported
    _save_inputs(tmp_path / "in.npz", inputs)
    code = (
        "BLOCKED = {'keras', 'tensorflow_probability', 'tf_keras', 'keras_vae', 'export'}\n"
        + BLOCK_IMPORTS
        + "import tensorflow as tf\nWATCH = BLOCKED\n"
        + "loaded = tf.saved_model.load(sys.argv[1])\n"
        + "def run(sig, t):\n"
        + "    return {k: v.numpy() for k, v in loaded.signatures[sig](**t).items()}\n"
        + RUN_ALL
    )
    result = _subprocess(
        code, paths["saved_model"], str(tmp_path / "in.npz"), str(tmp_path / "out.npz")
    )
    assert "imported: []" in result.stdout
    got = _load_outputs(tmp_path / "out.npz")
    assert set(got) == set(SIGNATURE_NAMES)
    for sig, tensors in expected_outputs(model, inputs).items():
        for name, value in tensors.items():
            np.testing.assert_allclose(
                got[sig][name], value, rtol=1e-5, atol=1e-5, err_msg=f"{sig}/{name}"
            )
    assert got["generate"]["images"].shape == (3, 28, 28, 1)
    assert got["serving_default"]["z"].shape == (3, LATENT)
    # No seed baked in: a fresh load here draws other samples than that process.
    here = tf.saved_model.load(paths["saved_model"])
    mine = here.signatures["generate"](count=tf.constant(3))["z"].numpy()
    assert not np.allclose(mine, got["generate"]["z"])


def test_saved_model_cli_runs_every_signature(exported, tmp_path):
    """The TF1/C++ loader that TF Serving uses: `saved_model_cli run` once, and
    its `run` command's two steps for every signature in one more process (a
    process per signature would spend most of the test importing TensorFlow)."""
    _, paths, inputs, _ = exported
    arguments = {}
    for sig, tensors in inputs.items():
        files = []
        for name, value in tensors.items():
            np.save(tmp_path / f"{sig}-{name}.npy", value)
            files.append(f"{name}={tmp_path / f'{sig}-{name}.npy'}")
        arguments[sig] = ";".join(files)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    command = [cli, "run", "--dir", paths["saved_model"], "--tag_set", "serve"]
    command += ["--signature_def", "decode", "--inputs", arguments["decode"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Result for output key logits" in result.stdout
    code = (
        "import sys, json\n"
        "from tensorflow.python.tools import saved_model_cli as cli\n"
        "for sig, text in json.loads(sys.argv[2]).items():\n"
        "    feed = cli.load_inputs_from_input_arg_string(text, '', '')\n"
        "    cli.run_saved_model_with_feed_dict(sys.argv[1], 'serve', sig, feed, None, False)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, paths["saved_model"], json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for output in ("z_mean", "logits", "reconstruction", "images", "negative_elbo"):
        assert f"Result for output key {output}" in result.stdout


def _serve_predict(loaded, request):
    """What TF Serving does with a PredictRequest: decode, run, encode."""
    from tensorflow_serving.apis import predict_pb2

    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
    response = predict_pb2.PredictResponse(model_spec=request.model_spec)
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response


def test_predict_requests_and_warmup_file(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    model, paths, inputs, _ = exported
    loaded = tf.saved_model.load(paths["saved_model"])
    expected = expected_outputs(model, inputs)
    for sig, tensors in inputs.items():
        request = serve_signature.predict_request("vae", sig, tensors)
        response = _serve_predict(loaded, request)
        for name, value in expected.get(sig, {}).items():
            np.testing.assert_allclose(
                tf.make_ndarray(response.outputs[name]), value, rtol=1e-5, atol=1e-5
            )
    warmup = os.path.join(paths["saved_model"], saved_model.WARMUP_FILE)
    replayed = []
    for record in tf.data.TFRecordDataset(warmup).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "vae"
        response = _serve_predict(loaded, request)
        assert all(np.isfinite(tf.make_ndarray(v)).all() for v in response.outputs.values())
        replayed.append(request.model_spec.signature_name)
    assert sorted(replayed) == sorted(SIGNATURE_NAMES)


def test_grpc_and_rest_clients_against_a_local_server(exported, capsys):
    """serve_signature.py's clients, against a stand-in for TF Serving on 127.0.0.1."""
    import http.server
    import threading
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    model, paths, inputs, tmp = exported
    loaded = tf.saved_model.load(paths["saved_model"])

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return _serve_predict(loaded, request)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    np.save(tmp / "images.npy", inputs["score"]["images"])
    try:
        code = serve_signature.main(
            [
                "grpc",
                "--signature",
                "score",
                "--images",
                str(tmp / "images.npy"),
                "--target",
                f"127.0.0.1:{port}",
                "--timeout",
                "60",
            ]
        )
    finally:
        server.stop(0)
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    expected = expected_outputs(model, inputs)["score"]
    np.testing.assert_allclose(got["negative_elbo"]["values"], expected["negative_elbo"], rtol=1e-5)

    bodies = []
    broken = []  # answers the server gives instead of the real one, in turn

    class Rest(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append((self.path, body))
            sig = loaded.signatures[body["signature_name"]]
            spec = sig.structured_input_signature[1]
            if "instances" in body:
                columns = {k: [row[k] for row in body["instances"]] for k in spec}
            else:
                columns = body["inputs"]
            feed = {k: tf.constant(v, dtype=spec[k].dtype) for k, v in columns.items()}
            outputs = {k: v.numpy().tolist() for k, v in sig(**feed).items()}
            if "instances" in body:  # TF Serving answers rows with rows
                rows = [
                    dict(zip(outputs, v, strict=True)) for v in zip(*outputs.values(), strict=True)
                ]
                payload = json.dumps({"predictions": rows}).encode()
            else:
                payload = json.dumps({"outputs": outputs}).encode()
            payload = broken.pop(0) if broken else payload
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Rest)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        for form in ("instances", "inputs"):
            url = f"http://127.0.0.1:{httpd.server_port}/v1/models/vae"
            assert (
                serve_signature.main(
                    [
                        "rest",
                        "--signature",
                        "score",
                        "--images",
                        str(tmp / "images.npy"),
                        "--form",
                        form,
                        "--url",
                        url,
                    ]
                )
                == 0
            )
            reply = json.loads(capsys.readouterr().out)
            if form == "instances":
                reply = {
                    "outputs": {"negative_elbo": [r["negative_elbo"] for r in reply["predictions"]]}
                }
            np.testing.assert_allclose(
                reply["outputs"]["negative_elbo"], expected["negative_elbo"], rtol=1e-5
            )
        # An answer that is not JSON, lacks the signature's outputs or has the wrong
        # number of rows is refused with the server's reply, never printed with exit 0.
        for answer, message in [
            (b"<html>proxy error</html>", "not JSON"),
            (b'{"outputs": {"z": [1, 2, 3]}}', "lacks the outputs ['negative_elbo'"),
            (
                b'{"outputs": {"negative_elbo": [1], "reconstruction": [1], "kl": [1]}}',
                "1 rows for 3",
            ),
            (b'{"error": "signature not found"}', "has no `outputs`"),
        ]:
            broken.append(answer)
            argv = ["rest", "--signature", "score", "--images", str(tmp / "images.npy")]
            assert serve_signature.main([*argv, "--url", url]) == 2
            err = capsys.readouterr().err
            assert message in err and "TF Serving answered:" in err, err
    finally:
        httpd.shutdown()
    assert [path for path, _ in bodies][:2] == ["/v1/models/vae:predict"] * 2
    assert len(bodies[0][1]["instances"]) == 3
    assert np.array(bodies[1][1]["inputs"]["images"]).shape == (3, 28, 28, 1)


# Runs `python serve_signature.py run ...` once per job in one process, the
# way Python starts the script (argv[0] is its path), with the blocker above.
SERVE_ALL = """
import json, runpy
WATCH = BLOCKED
for argv in json.loads(sys.argv[1]):
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        assert not e.code, (argv, e.code)
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in WATCH))
"""


def _serve_all_tflite(model_path, inputs, out_dir):
    """Every signature of a .tflite through serve_signature.py, TensorFlow blocked."""
    jobs, files = [], {}
    for sig, tensors in inputs.items():
        argv = [os.path.join(REPO, "serve_signature.py"), "run", model_path, "--signature", sig]
        for name, value in tensors.items():
            np.save(out_dir / f"{sig}-{name}.npy", value)
            argv += ["--input", f"{name}={out_dir / f'{sig}-{name}.npy'}"]
        files[sig] = out_dir / f"{sig}-outputs.npz"
        jobs.append([*argv, "--output", str(files[sig])])
    code = "BLOCKED = {'tensorflow', 'keras', 'tf_keras'}\n" + BLOCK_IMPORTS + SERVE_ALL
    result = _subprocess(code, json.dumps(jobs))
    assert "imported: []" in result.stdout, result.stdout[-2000:]
    return {sig: dict(np.load(path)) for sig, path in files.items()}


def test_the_serve_commands_table_of_outputs_is_the_exports(exported):
    """`keras-vae serve rest` checks answers against SIGNATURE_OUTPUTS, kept
    without TensorFlow: it must name what the export's signatures return."""
    from keras_vae.cli.serve import SIGNATURE_OUTPUTS

    _, paths, _, _ = exported
    signatures = runner.open_model(paths["saved_model"]).signatures
    assert set(signatures) <= set(SIGNATURE_OUTPUTS)
    for name, spec in signatures.items():
        assert set(SIGNATURE_OUTPUTS[name]) <= set(spec.outputs), name


def test_litert_without_tensorflow_matches_saved_model(exported, tmp_path):
    """The .tflite files run by serve_signature.py, which never imports
    TensorFlow (blocked here), give the SavedModel's outputs."""
    model, paths, inputs, _ = exported
    reference = _load_outputs_from_saved_model(paths["saved_model"], inputs)
    errors = {}
    for kind, tolerance in (("float32", 1e-5), ("float16", 1e-3), ("int8_decoder", None)):
        (tmp_path / kind).mkdir()
        int8 = kind == "int8_decoder"
        runnable = {s: t for s, t in inputs.items() if not int8 or s in INT8_SIGNATURES}
        got = _serve_all_tflite(paths["tflite"][kind], runnable, tmp_path / kind)
        for sig in ("decode", "reconstruct", "score", "generate_from_noise", "serving_default"):
            if sig not in got:
                assert kind == "int8_decoder"
                continue
            for name, value in reference[sig].items():
                if name == "z" and sig == "serving_default":
                    continue  # a random sample
                if tolerance is None:
                    errors[f"{sig}/{name}"] = float(np.abs(got[sig][name] - value).max())
                else:
                    np.testing.assert_allclose(
                        got[sig][name],
                        value,
                        rtol=tolerance,
                        atol=tolerance,
                        err_msg=f"{kind} {sig}/{name}",
                    )
        assert got["generate"]["images"].shape == (3, 28, 28, 1) if "generate" in got else True
    # int8 is approximate: report it, and check it is still the same picture.
    print("int8 decoder max abs error:", errors)
    assert errors["decode/mean"] < 0.1


def _load_outputs_from_saved_model(path, inputs):
    loaded = tf.saved_model.load(path)
    return {
        sig: {k: v.numpy() for k, v in loaded.signatures[sig](**t).items()}
        for sig, t in inputs.items()
    }


@pytest.mark.parametrize("kind", ["saved_model", "float32"])
def test_bad_input_is_named_not_crashed(exported, kind):
    _, paths, _, _ = exported
    path = paths["saved_model"] if kind == "saved_model" else paths["tflite"]["float32"]
    model = runner.open_model(path)
    images = np.zeros((2, 28, 28, 1), np.uint8)
    cases = [
        ("score", {"images": images.astype(np.float32)}, "has dtype float32; expected uint8"),
        (
            "score",
            {"images": np.zeros((2, 32, 32, 1), np.uint8)},
            "has shape (2, 32, 32, 1); expected uint8[batch, 28, 28, 1]",
        ),
        (
            "score",
            {"images": np.zeros((2, 28, 28, 3), np.uint8)},
            "expected uint8[batch, 28, 28, 1]",
        ),
        ("score", {"images": images[:0]}, "is an empty batch"),
        ("decode", {"z": np.full((1, LATENT), np.inf, np.float32)}, "contains NaN or inf"),
        ("decode", {"z": np.full((1, LATENT), np.nan, np.float32)}, "contains NaN or inf"),
        ("generate", {"count": 0}, "must be between 1 and"),
        ("encode", {"images": images}, "Unknown signature 'encode'. This model has ['decode'"),
        ("score", {"pixels": images}, "takes inputs ['images']"),
    ]
    for signature, inputs, message in cases:
        with pytest.raises(ValueError) as error:
            model.run(signature, inputs)
        assert message in str(error.value)
    # The runner still works after every refusal.
    assert model.run("score", {"images": images})["negative_elbo"].shape == (2,)


def test_killed_export_leaves_previous_version_intact(exported, tmp_path):
    _, paths, _, out = exported
    base = tmp_path / "saved_model" / "vae"
    command = [sys.executable, "-m", "export", "--model", str(out / "model.keras")]
    command += ["--no-tflite", "--output-dir", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not any(n.startswith(".tmp-export-") for n in os.listdir(base)):
            assert time.time() < deadline and proc.poll() is None, "export never started writing"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert saved_model.existing_versions(str(base)) == [1]
    decode = tf.saved_model.load(str(base / "1")).signatures["decode"]
    assert decode(z=tf.zeros((2, LATENT)))["mean"].shape == (2, 28, 28, 1)  # whole and usable
    third = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert sorted(os.listdir(base)) == ["1", "2"]  # the stale temporary is gone


def test_export_cli_errors(tmp_path, exported):
    _, _, _, out = exported
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "export", *a], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert "--model" in run("--help").stdout
    missing = run("--model", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert "no such run directory, .keras file or preset" in missing.stderr
    (tmp_path / "empty_run").mkdir()
    empty = run("--model", str(tmp_path / "empty_run"))
    assert empty.returncode == 2 and "holds no model.keras" in empty.stderr
    bare = run("--model", str(out / "model.keras"), "--output-dir", str(tmp_path / "x"))
    assert bare.returncode == 2 and "--calibration-images" in bare.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_run_writes_a_png_grid_of_returned_images(exported, kind, tmp_path, capsys):
    from PIL import Image

    _, paths, _, _ = exported
    path = paths["saved_model"] if kind == "saved_model" else paths["tflite"]["float32"]
    grid = tmp_path / "grid.png"
    args = ["run", path, "--signature", "generate", "--input", "count=6", "--output", str(grid)]
    assert serve_signature.main(args) == 0
    # 6 images of 28x28 in 3 columns and 2 rows, 1-pixel white lines between.
    assert np.asarray(Image.open(grid)).shape == (2 * 29 + 1, 3 * 29 + 1)
    # A signature without images is refused before it runs, and nothing is written.
    refused, shoe = tmp_path / "scores.png", tmp_path / "shoe.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(shoe)
    args = ["run", path, "--signature", "score", "--images", str(shoe), "--output", str(refused)]
    assert serve_signature.main(args) == 2
    assert "returns no images" in capsys.readouterr().err and not refused.exists()


def test_damaged_exports_are_refused_with_the_file_and_the_fix(exported, tmp_path, capsys):
    import shutil

    _, paths, _, _ = exported
    variables = os.path.join("variables", "variables.data-00000-of-00001")
    for damage in ("missing", "truncated"):
        copy = tmp_path / damage
        shutil.copytree(paths["saved_model"], copy)
        if damage == "missing":
            os.remove(copy / variables)
        else:
            os.truncate(copy / variables, 1000)
        args = ["run", str(copy), "--signature", "generate", "--input", "count=2"]
        assert serve_signature.main(args) == 2
        err = capsys.readouterr().err
        assert "variables are missing or damaged" in err and "python -m export" in err, err
    short = tmp_path / "short.tflite"
    short.write_bytes(open(paths["tflite"]["float32"], "rb").read()[:5000])
    assert (
        serve_signature.main(["run", str(short), "--signature", "generate", "--input", "count=2"])
        == 2
    )
    assert "is not a readable .tflite model" in capsys.readouterr().err
