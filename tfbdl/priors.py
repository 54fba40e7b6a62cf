"""Priors over a layer's weights, and the KL term each one contributes to the ELBO.

One small protocol. A `Prior` is a description, so one instance can be handed to many
layers. `prior.bind(layer, name, shape)` makes that layer's own `PriorTerm`, creating any
variables (hyperparameters) inside the layer so Keras tracks, trains and saves them there.
A term gives

    KL(q(w) || p(w))          closed form for Normal priors (`NormalKL`) and wherever TFP
                              registers one (`requires_sample = False`),
    log q(w~) - log p(w~)     a one-sample Monte Carlo estimate at the layer's own weight
                              sample w~ ~ q otherwise (`requires_sample = True`).

Built in: `Gaussian`, `HalfNormalHierarchical`, `SpikeAndSlab`, `Informed`; any
`tfp.distributions.Distribution`, or a callable `(shape, dtype) -> Distribution`, is
accepted too (`DistributionPrior`).
"""

import base64
import json
import math
import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfbdl import _validation, sampling
from tfbdl.posteriors import _softplus_inverse

tfd = tfp.distributions

__all__ = [
    "Prior",
    "Gaussian",
    "HalfNormalHierarchical",
    "SpikeAndSlab",
    "Informed",
    "DistributionPrior",
    "get",
]


# --------------------------------------------------------------------------- validation


def _check_broadcast(part_shape, weight_shape, argument, owner):
    """Raises unless an array of `part_shape` broadcasts to exactly `weight_shape`."""
    try:
        fits = np.broadcast_shapes(tuple(part_shape), tuple(weight_shape)) == tuple(weight_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"`{argument}`: {owner} has shape {tuple(part_shape)}, which cannot broadcast "
            f"to the weight shape {tuple(weight_shape)}."
        )


# --------------------------------------------------------------------------- fan-in scales

FAN_SCALES = ("radford", "xavier", "kaiming")


def _scale_rule(scale, owner):
    """`scale` if it names a fan-in rule (`FAN_SCALES`), None if it is a number or array."""
    if not isinstance(scale, str):
        return None
    if scale not in FAN_SCALES:
        raise ValueError(
            f"{owner}: `scale` must be a positive number, an array or one of {FAN_SCALES}, "
            f"got scale={scale!r}."
        )
    return scale


def _fan_scale(rule, layer, shape, owner):
    """The prior standard deviation that `rule` gives a weight of `layer` (Pyro/TyXe's
    layer-wise Normal prior; Neal 1996 for the 1 / sqrt(fan_in) scaling):

        radford  1 / sqrt(fan_in)
        xavier   sqrt(2 / (fan_in + fan_out))     (Glorot & Bengio 2010)
        kaiming  sqrt(2 / fan_in)                 (He et al. 2015)

    The fans are those of the layer's kernel, as Keras counts them: a dense kernel
    (in, out) has fan_in = in, fan_out = out; a convolution kernel (*kernel_size,
    in_channels / groups, filters) has fan_in = prod(kernel_size) * in_channels / groups
    and fan_out = prod(kernel_size) * filters. A bias (1-D) takes its kernel's fans.
    """
    if len(shape) < 2:
        kernel = getattr(layer, "kernel_posterior", None)
        if kernel is None:
            raise ValueError(
                f"{owner}: scale={rule!r} needs a kernel's fan-in, but the 1-D weight of shape "
                f"{tuple(shape)} belongs to a layer without a built kernel ({layer!r})."
            )
        shape = kernel.shape
    fan_in = float(np.prod(shape[:-1]))
    fan_out = float(np.prod(shape[:-2])) * float(shape[-1])
    variance = {"radford": 1.0 / fan_in, "xavier": 2.0 / (fan_in + fan_out), "kaiming": 2.0 / fan_in}[rule]
    return math.sqrt(variance)


def _encode_array(array):
    """A float32 array as a JSON-able dict (shape and base64 of its little-endian bytes)."""
    array = np.asarray(array, dtype="<f4")
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_array(value):
    """The inverse of `_encode_array`; any other value is read as a float32 array."""
    if isinstance(value, dict) and "float32_base64" in value:
        flat = np.frombuffer(base64.b64decode(value["float32_base64"]), dtype="<f4")
        return flat.reshape(value["shape"]).astype(np.float32)
    return np.asarray(value, dtype=np.float32)


# --------------------------------------------------------------------------- KL terms


class PriorTerm:
    """One layer's prior over one weight tensor; `kl` returns a float32 scalar."""

    requires_sample = False
    centred = True  # the variational variables are the weights (see `weights`)

    def kl(self, posterior, sample):
        raise NotImplementedError

    def weights(self, posterior, seed=None):
        """q of the layer's weights, from `posterior`, the snapshot of its variational variables.

        For a centred prior (all built-in ones but the non-centred grouped hierarchy) the
        variables are the weights and this returns `posterior`. A non-centred prior
        (`centred = False`) learns other variables from which the weights follow; it returns
        q(w | its shared draws at `seed`) for one forward pass, or, with `seed=None`, the
        mean-field Normal with q(w)'s exact mean and standard deviation.
        """
        return posterior

    def summary(self):
        """Learned hyperparameters worth reporting (e.g. `{"tau": ...}`); empty by default."""
        return {}


class ClosedFormKL(PriorTerm):
    """sum_i KL(q(w_i) || p(w_i)) from `tfd.kl_divergence`."""

    def __init__(self, make_prior):
        self._make_prior = make_prior

    def kl(self, posterior, sample):
        return tf.reduce_sum(tfd.kl_divergence(posterior.distribution(), self._make_prior()))


@tf.custom_gradient
def _sum_log(x):
    """sum(log x) whose gradient is one op, g / x (autodiff would broadcast g to x's shape
    first, then take 1 / x, then multiply: three weight-sized passes instead of one)."""
    return tf.reduce_sum(tf.math.log(x)), lambda g: g / x


def _sum_over_weights(values, num_weights):
    """sum of `values` broadcast to the weights: each element repeats num_weights / values.size times."""
    return tf.reduce_sum(values) * (num_weights / float(np.prod(values.shape)))


def _normal_kl(mu, sigma, distance, log_scale, inverse_variance):
    """sum_i KL(N(mu_i, sigma_i^2) || N(m_i, s_i^2)) from log s and 1 / s^2 (each a scalar or
    broadcastable to the weights) and distance = mu - m:

        sum_i [log s_i - log sigma_i + (sigma_i^2 + (mu_i - m_i)^2) / (2 s_i^2) - 1/2]

    With a scalar s, two `tf.nn.l2_loss` sums times 1 / s^2 and one log: a third of the
    weight-sized passes of `tfd.kl_divergence`, forwards and backwards (benchmarks/PROFILE.md).
    """
    num_weights = float(np.prod(mu.shape))
    if int(np.prod(inverse_variance.shape)) == 1:
        squares = (tf.nn.l2_loss(sigma) + tf.nn.l2_loss(distance)) * tf.reshape(inverse_variance, [])
    else:
        squares = 0.5 * tf.reduce_sum((tf.square(sigma) + tf.square(distance)) * inverse_variance)
    return _sum_over_weights(log_scale, num_weights) - _sum_log(sigma) + squares - 0.5 * num_weights


class NormalKL(PriorTerm):
    """sum_i KL(N(mu_i, sigma_i^2) || N(m_i, s_i^2)) for a Normal prior, in closed form
    (`_normal_kl`): the value of `tfd.kl_divergence` summed, in fewer passes.

    Args:
        loc: the prior mean m, a numpy array or a variable; None when it is 0.
        scale: the prior standard deviation s, a numpy array or a variable, broadcastable
            to the weight shape.
    """

    def __init__(self, loc, scale):
        self.loc = loc
        self.scale = scale

    def kl(self, posterior, sample):
        mu = tf.convert_to_tensor(posterior.loc)
        scale = tf.convert_to_tensor(self.scale, dtype=mu.dtype)
        distance = mu if self.loc is None else mu - tf.convert_to_tensor(self.loc, dtype=mu.dtype)
        return _normal_kl(mu, posterior.scale(), distance, tf.math.log(scale), 1.0 / tf.square(scale))


class MonteCarloKL(PriorTerm):
    """log q(w~) - log p(w~) at a sample w~ ~ q: an unbiased one-sample KL estimate."""

    requires_sample = True

    def __init__(self, make_prior):
        self._make_prior = make_prior

    def kl(self, posterior, sample):
        log_q = tf.reduce_sum(posterior.distribution().log_prob(sample))
        log_p = tf.reduce_sum(self._make_prior().log_prob(sample))
        return log_q - log_p


# --------------------------------------------------------------------------- priors


class Prior:
    """Base class of the built-in priors (a description; see the module docstring)."""

    def check_shape(self, shape, argument):
        """Raises `ValueError` naming `argument` if this prior cannot cover `shape`."""

    def bind(self, layer, name, shape):
        """Returns the `PriorTerm` of `layer`'s weight `name` of shape `shape`."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfbdl")
class Gaussian(Prior):
    """Fixed Normal prior p(w) = N(loc, scale^2); closed-form KL.

    Args:
        scale: prior standard deviation (> 0), a number or an array broadcastable to
            the weight shape; or a fan-in rule, "radford" (1 / sqrt(fan_in)), "xavier"
            (sqrt(2 / (fan_in + fan_out))) or "kaiming" (sqrt(2 / fan_in)), giving each
            layer a scale that follows its own fan-in (see `_fan_scale`).
        loc: prior mean, a number or such an array.

    A fixed N(0, 1) prior on an 800-wide layer charges every useful weight a large KL;
    a fan-in scale keeps the prior's pre-activation variance independent of the width.

    Example:
        >>> tfbdl.layers.DenseFlipout(10, prior=tfbdl.priors.Gaussian(scale=0.5))
        >>> tfbdl.layers.Conv2DFlipout(32, 5, prior=tfbdl.priors.Gaussian(scale="kaiming"))
    """

    def __init__(self, scale=1.0, loc=0.0):
        self.scale_rule = _scale_rule(scale, type(self).__name__)
        self.scale = self.scale_rule or _validation.positive_array(scale, "scale", type(self).__name__)
        self.loc = np.asarray(loc, dtype=np.float32)
        if not np.all(np.isfinite(self.loc)):
            raise ValueError(f"Gaussian: `loc` must be finite, got loc={loc!r}.")

    def check_shape(self, shape, argument):
        _check_broadcast(self.loc.shape, shape, argument, "Gaussian `loc`")
        _check_broadcast(np.shape(self.scale), shape, argument, "Gaussian `scale`")

    def bind(self, layer, name, shape):
        self.check_shape(shape, name)
        scale = (np.float32(_fan_scale(self.scale_rule, layer, shape, "Gaussian"))
                 if self.scale_rule else self.scale)
        return NormalKL(None if not np.any(self.loc) else self.loc, scale)

    def get_config(self):
        return {"scale": self.scale_rule or self.scale.tolist(), "loc": self.loc.tolist()}

    def __repr__(self):
        return f"Gaussian(scale={self.scale_rule or self.scale.tolist()!r}, loc={self.loc.tolist()})"


@keras.saving.register_keras_serializable(package="tfbdl")
class Informed(Prior):
    """Normal prior centred on given (e.g. pretrained) weights: p(w) = N(loc, scale^2).

    For transfer learning with informed priors. The config carries the values themselves
    (float32, base64-encoded), so `get_config`/`from_config`, `keras.models.clone_model` and
    `model.save`/`keras.saving.load_model` all keep the prior it was made with.

    Example:
        >>> trained = dense.get_weights()[0]
        >>> tfbdl.layers.DenseFlipout(10, prior=tfbdl.priors.Informed(trained, scale=0.1))
    """

    def __init__(self, loc, scale):
        self.loc = _decode_array(loc)
        if not np.all(np.isfinite(self.loc)):
            raise ValueError("Informed: `loc` must be finite, got non-finite values.")
        self.scale = _validation.positive_array(_decode_array(scale), "scale", "Informed")

    def check_shape(self, shape, argument):
        _check_broadcast(self.loc.shape, shape, argument, "Informed `loc`")
        _check_broadcast(self.scale.shape, shape, argument, "Informed `scale`")

    def bind(self, layer, name, shape):
        self.check_shape(shape, name)
        return NormalKL(self.loc, self.scale)

    def get_config(self):
        return {"loc": _encode_array(self.loc), "scale": _encode_array(self.scale)}

    def __repr__(self):
        return f"Informed(loc of shape {self.loc.shape}, scale of shape {self.scale.shape})"


class HierarchicalKL(PriorTerm):
    """KL term of w | tau ~ N(0, tau^2), tau ~ HalfNormal(a), q(tau) = LogNormal(m, s^2).

    With q(w_i) = N(mu_i, sigma_i^2), everything is in closed form:

        E_q(tau) KL(q(w_i) || N(0, tau^2))
            = E[log tau] - log sigma_i + (sigma_i^2 + mu_i^2) / 2 * E[tau^-2] - 1/2,
              E[log tau] = m,   E[tau^-2] = exp(-2m + 2s^2),

    the Normal KL with log s and 1 / s^2 replaced by their expectations (`_normal_kl`), and

        KL(q(tau) || HalfNormal(a))
            = -H[q(tau)] - 1/2 log(2/pi) + log a + E[tau^2] / (2 a^2),
              H[q(tau)] = m + 1/2 + log s + 1/2 log(2 pi),   E[tau^2] = exp(2m + 2s^2).
    """

    def __init__(self, prior_scale, tau_loc, tau_untransformed_scale):
        self.prior_scale = float(prior_scale)
        self.tau_loc = tau_loc
        self.tau_untransformed_scale = tau_untransformed_scale

    def _tau_posterior(self):
        m = tf.convert_to_tensor(self.tau_loc)
        return m, tf.nn.softplus(tf.convert_to_tensor(self.tau_untransformed_scale))

    def kl(self, posterior, sample):
        m, s = self._tau_posterior()
        mu = tf.convert_to_tensor(posterior.loc)
        weights_kl = _normal_kl(mu, posterior.scale(), mu, m, tf.exp(-2.0 * m + 2.0 * s**2))
        return weights_kl + self.tau_kl()

    def tau_kl(self):
        """KL(q(tau) || HalfNormal(a)), summed over the taus."""
        m, s = self._tau_posterior()
        a = self.prior_scale
        entropy = m + 0.5 + tf.math.log(s) + 0.5 * math.log(2.0 * math.pi)
        expected_log_prior = 0.5 * math.log(2.0 / math.pi) - math.log(a) - self.tau_second_moment / (2.0 * a**2)
        return tf.reduce_sum(-entropy - expected_log_prior)

    def sample_tau(self, seed):
        """One reparameterized draw tau = exp(m + s z), z ~ N(0, 1) (stateless seed)."""
        m, s = self._tau_posterior()
        return tf.exp(m + s * sampling.standard_normal(tf.shape(m), seed, m.dtype))

    @property
    def tau(self):
        """Posterior mean of the learned prior scale, E_q[tau] = exp(m + s^2 / 2)."""
        m, s = self._tau_posterior()
        return tf.exp(m + 0.5 * s**2)

    @property
    def tau_second_moment(self):
        """E_q[tau^2] = exp(2m + 2s^2)."""
        m, s = self._tau_posterior()
        return tf.exp(2.0 * m + 2.0 * s**2)

    def summary(self):
        return {"tau": self.tau}


@keras.saving.register_keras_serializable(package="tfbdl")
class HalfNormalHierarchical(Prior):
    """Hierarchical prior that learns its own regularization strength.

        tau ~ HalfNormal(scale),    w | tau ~ N(0, tau^2)

    with one tau per layer (or, with `per_unit=True`, one per output unit: the last axis of
    the kernel). tau gets its own variational posterior q(tau) = LogNormal(m, s^2), whose
    variables live in the layer, and the KL of (w, tau) enters the ELBO in closed form
    (see `HierarchicalKL`). `scale` is a number or a fan-in rule ("radford", "xavier",
    "kaiming"; see `_fan_scale`) so the hyperprior follows each layer's width. This is
    the "hierarchical regularization" of the PyMC ADVI
    MNIST study; Neal (1996), "Bayesian Learning for Neural Networks", ch. 1.

    The learned tau is `layer.kernel_prior_term.tau` (and `tfbdl.learned_tau(model)`).

    Example:
        >>> p = tfbdl.priors.HalfNormalHierarchical(1.0)
        >>> model = keras.Sequential([tfbdl.layers.DenseFlipout(800, prior=p), ...])
    """

    def __init__(self, scale=1.0, per_unit=False):
        self.scale_rule = _scale_rule(scale, "HalfNormalHierarchical")
        self.scale = self.scale_rule or _validation.positive_number(scale, "scale", "HalfNormalHierarchical")
        self.per_unit = _validation.boolean(per_unit, "per_unit", "HalfNormalHierarchical")

    def bind(self, layer, name, shape):
        tau_shape = (shape[-1],) if self.per_unit else ()
        scale = (_fan_scale(self.scale_rule, layer, shape, "HalfNormalHierarchical")
                 if self.scale_rule else self.scale)
        # Start q(tau) near the prior mean, E[tau] = scale * sqrt(2 / pi), fairly narrow.
        initial_m = math.log(scale * math.sqrt(2.0 / math.pi))
        tau_loc = layer.add_weight(
            name=f"{name}_tau_loc",
            shape=tau_shape,
            initializer=keras.initializers.Constant(initial_m),
            dtype="float32",
        )
        tau_untransformed_scale = layer.add_weight(
            name=f"{name}_tau_untransformed_scale",
            shape=tau_shape,
            initializer=keras.initializers.Constant(_softplus_inverse(0.1)),
            dtype="float32",
        )
        return HierarchicalKL(scale, tau_loc, tau_untransformed_scale)

    def get_config(self):
        return {"scale": self.scale, "per_unit": self.per_unit}

    def __repr__(self):
        return f"HalfNormalHierarchical(scale={self.scale!r}, per_unit={self.per_unit})"


@keras.saving.register_keras_serializable(package="tfbdl")
class SpikeAndSlab(Prior):
    """Scale-mixture prior of Blundell et al. (2015), "Weight Uncertainty in Neural Networks":

        p(w) = pi * N(w | 0, slab_scale^2) + (1 - pi) * N(w | 0, spike_scale^2)

    No closed-form KL against a Normal posterior, so the term is the one-sample Monte Carlo
    estimate at the layer's weight sample. The narrow spike drives many weights to zero.

    Example:
        >>> tfbdl.layers.DenseFlipout(10, prior=tfbdl.priors.SpikeAndSlab(pi=0.5))
    """

    def __init__(self, pi=0.5, slab_scale=1.0, spike_scale=1e-3):
        if not _validation.is_number(pi) or not 0.0 < pi < 1.0:
            raise ValueError(f"SpikeAndSlab: `pi` must be a number in (0, 1), got pi={pi!r}.")
        self.pi = float(pi)
        self.slab_scale = _validation.positive_number(slab_scale, "slab_scale", "SpikeAndSlab")
        self.spike_scale = _validation.positive_number(spike_scale, "spike_scale", "SpikeAndSlab")

    def distribution(self):
        """The mixture as a `tfd.MixtureSameFamily` with scalar batch and event shape."""
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(probs=[self.pi, 1.0 - self.pi]),
            components_distribution=tfd.Normal(loc=[0.0, 0.0], scale=[self.slab_scale, self.spike_scale]),
        )

    def bind(self, layer, name, shape):
        return MonteCarloKL(self.distribution)

    def get_config(self):
        return {"pi": self.pi, "slab_scale": self.slab_scale, "spike_scale": self.spike_scale}

    def __repr__(self):
        return f"SpikeAndSlab(pi={self.pi}, slab_scale={self.slab_scale}, spike_scale={self.spike_scale})"


# --------------------------------------------------------------------------- any distribution


def _distribution_to_config(distribution):
    """A JSON-able description of a TFP distribution built from its constructor parameters."""
    parameters = {}
    defaults = {"validate_args": False, "allow_nan_stats": True}  # written only when not default
    for key, value in distribution.parameters.items():
        if key == "name" or value is None or (key in defaults and value == defaults[key]):
            continue
        if isinstance(value, tfd.Distribution):
            value = _distribution_to_config(value)
        elif tf.is_tensor(value) or isinstance(value, (np.ndarray, list, tuple)):
            value = {"array": np.asarray(value).tolist()}
        elif not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"parameter {key}={value!r} of {type(distribution).__name__} is not a number, "
                            "an array or a distribution")
        parameters[key] = value
    return {"class_name": type(distribution).__name__, "parameters": parameters}


def _distribution_from_config(config):
    parameters = {}
    for key, value in config["parameters"].items():
        if isinstance(value, dict) and "class_name" in value:
            value = _distribution_from_config(value)
        elif isinstance(value, dict) and "array" in value:
            value = np.asarray(value["array"], dtype=np.float32)
        parameters[key] = value
    return getattr(tfd, config["class_name"])(**parameters)


_SAVABLE_PRIORS = (
    "To save the model, write the prior as a named function decorated with "
    "@keras.saving.register_keras_serializable(), or as a tfbdl.priors.Prior subclass"
)


def _check_parameters(distribution):
    """Raises a ValueError naming the distribution when its parameters are invalid (e.g. a
    negative scale), which would otherwise give a NaN KL."""
    try:
        distribution.copy(validate_args=True)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        message = getattr(error, "message", str(error)).splitlines()[0]
        raise ValueError(f"DistributionPrior: invalid parameters of {distribution!r}: {message}") from None


@keras.saving.register_keras_serializable(package="tfbdl")
class DistributionPrior(Prior):
    """Any `tfp.distributions.Distribution`, or a callable `(shape, dtype) -> Distribution`.

    The KL is `tfd.kl_divergence` when TFP registers one for (Normal, this distribution),
    and the one-sample Monte Carlo estimate otherwise. The distribution's
    `batch_shape + event_shape` must broadcast to the weight shape. A callable is called
    once per weight shape (the distribution it returns is kept for that shape).

    Example:
        >>> tfbdl.layers.DenseFlipout(10, prior=tfd.Laplace(0.0, 0.3))
        >>> @keras.saving.register_keras_serializable()  # so a model using it saves and loads
        ... def wide_normal(shape, dtype):
        ...     return tfd.Normal(tf.zeros(shape, dtype), 2.0)
        >>> tfbdl.layers.DenseFlipout(10, prior=wide_normal)

    A prior that could not be loaded back (a lambda, a `functools.partial`, a distribution
    with a bijector) warns when it is made and refuses `get_config`, so `model.save` fails
    before it writes anything.
    """

    def __init__(self, distribution):
        if not (isinstance(distribution, tfd.Distribution) or callable(distribution)):
            raise ValueError(
                "DistributionPrior: `distribution` must be a tfp Distribution or a callable "
                f"(shape, dtype) -> Distribution, got distribution={distribution!r}."
            )
        self.distribution = distribution
        self._made = {}  # weight shape -> the distribution the callable returned for it
        if isinstance(distribution, tfd.Distribution):
            _check_parameters(distribution)
        self.unsavable_reason = self._unsavable_reason()
        if self.unsavable_reason:
            warnings.warn(f"DistributionPrior: a model with this prior cannot be saved: "
                          f"{self.unsavable_reason}. {_SAVABLE_PRIORS}", UserWarning, stacklevel=3)

    def _unsavable_reason(self):
        """Why this prior's config would not load back, or None when it would."""
        if getattr(self.distribution, "__name__", None) == "<lambda>":
            return "it is a lambda, which Keras cannot load back (it loses the names it uses)"
        try:
            if isinstance(self.distribution, tfd.Distribution):
                _distribution_from_config(json.loads(json.dumps(_distribution_to_config(self.distribution))))
            else:
                keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(self.distribution))
        except Exception as error:  # any failure of the round trip means: not savable
            return f"{type(error).__name__}: {error}"
        return None

    def _make(self, shape):
        if isinstance(self.distribution, tfd.Distribution):
            return self.distribution
        shape = tuple(shape)
        if shape not in self._made:
            made = self.distribution(shape, tf.float32)
            if not isinstance(made, tfd.Distribution):
                raise ValueError(
                    f"DistributionPrior: the callable must return a tfp Distribution, got {made!r}."
                )
            _check_parameters(made)
            self._made[shape] = made
        return self._made[shape]

    def check_shape(self, shape, argument):
        made = self._make(shape)
        full_shape = tuple(made.batch_shape) + tuple(made.event_shape)
        _check_broadcast(full_shape, shape, argument, f"prior distribution {made.name}")

    def bind(self, layer, name, shape):
        prior = self._make(shape)
        self.check_shape(shape, name)
        probe = tfd.Normal(tf.zeros(shape), tf.ones(shape))
        try:
            tfd.kl_divergence(probe, prior)
        except NotImplementedError:
            return MonteCarloKL(lambda: prior)
        return ClosedFormKL(lambda: prior)

    def get_config(self):
        if self.unsavable_reason:
            raise ValueError(f"DistributionPrior: cannot save this prior: {self.unsavable_reason}. {_SAVABLE_PRIORS}")
        if isinstance(self.distribution, tfd.Distribution):
            return {"distribution": _distribution_to_config(self.distribution)}
        return {"distribution": keras.saving.serialize_keras_object(self.distribution)}

    @classmethod
    def from_config(cls, config):
        stored = config["distribution"]
        if isinstance(stored, dict) and "parameters" in stored:
            return cls(_distribution_from_config(stored))
        return cls(keras.saving.deserialize_keras_object(stored))

    def __repr__(self):
        return f"DistributionPrior({self.distribution!r})"


def get(prior, argument="prior"):
    """Resolves a layer's `prior=` / `bias_prior=` argument to a `Prior` (None stays None)."""
    if prior is None or isinstance(prior, Prior):
        return prior
    if isinstance(prior, dict):
        return keras.saving.deserialize_keras_object(prior)
    if isinstance(prior, tfd.Distribution) or callable(prior):
        return DistributionPrior(prior)
    raise ValueError(
        f"`{argument}` must be a tfbdl prior, a tfp Distribution or a callable "
        f"(shape, dtype) -> Distribution, got {argument}={prior!r}."
    )
