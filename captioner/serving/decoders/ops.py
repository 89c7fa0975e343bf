"""The few operations a decoding step is written in, on three engines.

A step written once against ``ops`` (``merge.step``, ``ensemble.vote``) is evaluated three ways:

- ``NUMPY``: eagerly, on float32 NumPy arrays (serving without TensorFlow or OpenVINO);
- ``openvino_ops()``: traced into an OpenVINO graph (``openvino.opset13`` nodes), compiled once;
- ``tensorflow_ops()``: traced inside a ``tf.function`` over a Keras model's variables (training's
  decoding, which must follow the weights as they change).

Every engine takes 2-D float32 ``(rows, width)`` values and (rows,) int word ids, and ``constant``
turns a NumPy array or scalar into a value of its kind. Splits are along the last axis.
"""
from __future__ import annotations

import functools

import numpy as np


class NumPyOps:
    """Eager float32 NumPy."""

    name = "numpy"

    @staticmethod
    def constant(value):
        return np.ascontiguousarray(value, dtype=np.float32)

    @staticmethod
    def matmul(a, b):
        return a @ b

    @staticmethod
    def add(a, b):
        return a + b

    @staticmethod
    def subtract(a, b):
        return a - b

    @staticmethod
    def multiply(a, b):
        return a * b

    @staticmethod
    def maximum(a, b):
        return np.maximum(a, b)

    @staticmethod
    def sigmoid(x):
        # 0.5 (1 + tanh(x / 2)): the logistic function without overflow warnings for large negative x
        return (np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x))).astype(np.float32, copy=False)

    @staticmethod
    def tanh(x):
        return np.tanh(x)

    @staticmethod
    def relu(x):
        return np.maximum(x, np.float32(0.0))

    @staticmethod
    def exp(x):
        return np.exp(x)

    @staticmethod
    def log(x):
        with np.errstate(divide="ignore"):  # log(0) = -inf is meant (a word every member rules out)
            return np.log(x)

    @staticmethod
    def finite_or(x, value: float):
        """``x`` with its infinite (and NaN) entries replaced by ``value``."""
        return np.where(np.isfinite(x), x, np.float32(value))

    @staticmethod
    def split(x, parts: int):
        """Equal slices of the last axis (views, no copies)."""
        width = x.shape[-1] // parts
        return [x[..., k * width:(k + 1) * width] for k in range(parts)]

    @staticmethod
    def gather(table, ids):
        """Rows ``ids`` of ``table``."""
        return table[np.asarray(ids, np.intp)]

    @staticmethod
    def log_softmax(x):
        """Row-wise log-softmax, stable for any logits (the max is subtracted first)."""
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


NUMPY = NumPyOps()


@functools.lru_cache(maxsize=1)
def openvino_ops():
    """The ops as OpenVINO graph nodes (``openvino.opset13``); ImportError without OpenVINO."""
    import openvino.opset13 as ov

    last = ov.constant(np.int64(-1))
    rows = ov.constant(np.int64(0))

    class OpenVINOOps:
        name = "openvino"
        constant = staticmethod(lambda value: ov.constant(np.asarray(value, np.float32)))
        matmul = staticmethod(lambda a, b: ov.matmul(a, b, False, False))
        add = staticmethod(ov.add)
        subtract = staticmethod(ov.subtract)
        multiply = staticmethod(ov.multiply)
        maximum = staticmethod(ov.maximum)
        sigmoid = staticmethod(ov.sigmoid)
        tanh = staticmethod(ov.tanh)
        relu = staticmethod(ov.relu)
        exp = staticmethod(ov.exp)
        log = staticmethod(ov.log)
        finite_or = staticmethod(lambda x, value: ov.select(ov.is_finite(x), x, ov.constant(np.float32(value))))
        split = staticmethod(lambda x, parts: list(ov.split(x, last, parts).outputs()))
        gather = staticmethod(lambda table, ids: ov.gather(table, ids, rows))
        log_softmax = staticmethod(lambda x: ov.log_softmax(x, -1))

    return OpenVINOOps()


@functools.lru_cache(maxsize=1)
def tensorflow_ops():
    """The ops as TensorFlow operations (for use inside a ``tf.function``); Keras variables are read
    where they are used, so a traced step always sees their current values."""
    import tensorflow as tf

    class TensorFlowOps:
        name = "tensorflow"
        constant = staticmethod(lambda value: tf.constant(np.asarray(value, np.float32)))
        matmul = staticmethod(tf.matmul)
        add = staticmethod(tf.add)
        subtract = staticmethod(tf.subtract)
        multiply = staticmethod(tf.multiply)
        maximum = staticmethod(tf.maximum)
        sigmoid = staticmethod(tf.sigmoid)
        tanh = staticmethod(tf.tanh)
        relu = staticmethod(tf.nn.relu)
        exp = staticmethod(tf.exp)
        log = staticmethod(tf.math.log)
        finite_or = staticmethod(lambda x, value: tf.where(tf.math.is_finite(x), x, tf.constant(value, x.dtype)))
        split = staticmethod(lambda x, parts: tf.split(x, parts, axis=-1))
        gather = staticmethod(tf.gather)
        log_softmax = staticmethod(tf.nn.log_softmax)

    return TensorFlowOps()
