"""`BayesianLayer`: a Keras Dense/Conv layer made Bayesian by two plugged objects.

A Bayesian layer is its Keras twin (same arguments, config, output shapes and linear op)
plus a posterior over its kernel (where `kernel_initializer` & co. initialize the means),
a prior whose KL enters the model's losses through `add_loss`, and a gradient estimator
(the class attribute `estimator`, the only thing that differs between the classes).

The bias is a deterministic weight unless `bias_prior=` is given; then it gets the same
mean-field posterior and is sampled once per batch.

The KL is added as `kl_weight * KL(q || p)`, where `kl_weight` is a non-trainable variable
(1 / number of training examples, set once per model by `tfbdl.set_kl_weight`), so the
model's loss is the per-example negative ELBO `NLL + KL / N`, and annealing can change the
weight without retracing. The variable is the one source of truth: it is saved with the
layer, and holds `UNSET_KL_WEIGHT` (< 0) until a weight is set, in which case the full KL
(weight 1) is used with a warning. Loading weights fills an unset weight and keeps a set
one: the N stated for the current data wins over the one a file was saved with.

The forward mode is a variable too, read by a `tf.switch_case` in the forward pass, so
switching modes needs no retracing (and is safe inside `fit`):

    ESTIMATOR                 the class's estimator (Flipout, reparameterization, ...): training
    POSTERIOR_MEAN            the posterior means, deterministic (`tfbdl.posterior_mean`)
    ONE_SAMPLE_PER_BATCH      one weight sample W ~ q shared by the batch, one linear op
                              (`tfbdl.one_sample_per_batch`; what `tfbdl.predict` uses)

Under every estimator each example's weights are distributed as q(W), so per-example
predictive quantities have the same distribution in ESTIMATOR and ONE_SAMPLE_PER_BATCH
modes; only the correlation between examples of a batch differs, which no per-example
summary sees. Flipout's second linear op (and local reparameterization's variance op)
buy decorrelated gradients, which prediction does not need.
"""

import warnings
import weakref

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfbdl import _keras_internals, elbo, posteriors, priors
from tfbdl.layers import estimators

UNSET_KL_WEIGHT = -1.0
ESTIMATOR, POSTERIOR_MEAN, ONE_SAMPLE_PER_BATCH = 0, 1, 2  # forward modes (module docstring)
_WARNED_UNSET_KL_WEIGHT = weakref.WeakSet()  # models (or lone layers) already warned


def _warn_unset_kl_weight(layer, model):
    """Warns once per model (or per layer called on its own) that trains with no KL weight."""
    owner = model if isinstance(model, keras.Model) else layer
    if owner in _WARNED_UNSET_KL_WEIGHT:
        return
    _WARNED_UNSET_KL_WEIGHT.add(owner)
    warnings.warn(
        f"tfbdl: training '{owner.name}' with no KL weight set on Bayesian layer "
        f"'{layer.name}', so the full KL (weight 1.0) is added to a loss that averages over "
        "the batch. State the number of training examples once: "
        "tfbdl.set_kl_weight(model, num_examples=N).",
        UserWarning,
        stacklevel=3,
    )


def _weight_kl(posterior, prior_term, sample, seed):
    """The prior term's KL, drawing a fresh weight sample only if it needs one."""
    # A module function, not a staticmethod: reached through `self`, the staticmethod was
    # mis-called by AutoGraph in `tf.function(lambda: layer.kl_divergence())` once other
    # traced code had run ("_weight_kl() missing 3 required positional arguments").
    if prior_term.requires_sample and sample is None:
        sample = posterior.sample(seed)
    return prior_term.kl(posterior, sample)


class BayesianLayer:
    """Mixin placed before a Keras layer class; see the module docstring.

    Args (besides those of the Keras twin):
        prior: prior over the kernel: a `tfbdl.priors.Prior`, a `tfp.distributions.Distribution`
            or a callable `(shape, dtype) -> Distribution`. Default `Gaussian(1.0)`.
        bias_prior: prior over the bias, same forms; `None` (default) keeps the bias a
            deterministic weight.
        posterior: the variational family, default `tfbdl.posteriors.MeanFieldNormal()`.
        seed: seed of the layer's `keras.random.SeedGenerator`, for reproducible sampling.
    """

    estimator = None  # (layer, inputs, kernel, seed) -> (outputs, kernel_sample)

    def __init__(self, *args, prior=None, bias_prior=None, posterior=None, seed=None, **kwargs):
        prior = priors.get(prior, "prior") or priors.Gaussian()
        bias_prior = priors.get(bias_prior, "bias_prior")
        posterior = posteriors.get(posterior)
        # Variational parameters and the KL stay float32 under a mixed-precision policy:
        # the estimators cast what they feed the linear op to the compute dtype themselves.
        kwargs.setdefault("autocast", False)
        super().__init__(*args, **kwargs)
        if self.dtype_policy.variable_dtype != "float32":
            raise ValueError(
                f"{type(self).__name__}: variational parameters and the KL are float32, so "
                "`dtype` must be a policy with float32 variables ('float32', 'mixed_float16', "
                f"'mixed_bfloat16'), got dtype={kwargs.get('dtype')!r}."
            )
        for size in ("units", "filters"):  # Keras takes True for 1; a bool is a mistake here
            if isinstance(getattr(self, size, None), bool):
                raise ValueError(
                    f"{type(self).__name__}: `{size}` must be a positive integer, "
                    f"got {size}={getattr(self, size)!r}."
                )
        if getattr(self, "lora_rank", None):
            raise ValueError(
                f"{type(self).__name__}: `lora_rank` is not supported by Bayesian layers, "
                f"got lora_rank={self.lora_rank!r}."
            )
        self.prior = prior
        self.bias_prior = bias_prior
        self.posterior = posterior
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Not a Keras weight: the forward mode is not saved with the model.
        self.forward_mode = tf.Variable(ESTIMATOR, trainable=False, dtype=tf.int32, name="forward_mode")
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), trainable=False, dtype="float32",
            initializer=keras.initializers.Constant(UNSET_KL_WEIGHT),
        )
        self.kernel_posterior = None
        self.bias_posterior = None
        self._deterministic_bias = None

    # ------------------------------------------------------------------ family hooks

    channel_axis = -1

    def weight_shapes(self, input_shape):
        """(kernel shape, bias shape) for `input_shape`; sets `input_spec`. Family-specific."""
        raise NotImplementedError

    def linear(self, inputs, kernel):
        """The twin's deterministic op with the given kernel. Family-specific."""
        raise NotImplementedError

    def add_bias(self, outputs, bias):
        raise NotImplementedError

    # ------------------------------------------------------------------ weights

    def add_weight(self, *args, **kwargs):
        # Variational parameters, hyperpriors and the KL weight are read as float32 even
        # when Keras opens a mixed-precision autocast scope (it does for a layer called on
        # its own, whatever the layer's `autocast`).
        kwargs.setdefault("autocast", False)
        return super().add_weight(*args, **kwargs)

    def build(self, input_shape):
        kernel_shape, bias_shape = self.weight_shapes(input_shape)
        # Validate every prior before creating any variable.
        self.prior.check_shape(kernel_shape, "prior")
        if self.use_bias and self.bias_prior is not None:
            self.bias_prior.check_shape(bias_shape, "bias_prior")

        self.kernel_posterior = self.posterior.bind(
            self, "kernel", kernel_shape, self.kernel_initializer,
            self.kernel_regularizer, self.kernel_constraint,
        )
        self.kernel_prior_term = self.prior.bind(self, "kernel", kernel_shape)
        if self.use_bias and self.bias_prior is not None:
            self.bias_posterior = self.posterior.bind(
                self, "bias", bias_shape, self.bias_initializer,
                self.bias_regularizer, self.bias_constraint,
            )
            self.bias_prior_term = self.bias_prior.bind(self, "bias", bias_shape)
        elif self.use_bias:
            self._deterministic_bias = self.add_weight(
                name="bias", shape=bias_shape, initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                dtype="float32",
            )
        self.built = True

    @property
    def kernel(self):
        """The kernel's posterior mean (what the Keras twin would call its kernel)."""
        if not self.built:
            raise AttributeError(f"Build layer '{self.name}' before accessing `kernel`.")
        return self.weight_distributions()["kernel"].loc

    @property
    def bias(self):
        """The bias's posterior mean, the deterministic bias, or None without a bias."""
        if self.bias_posterior is not None:
            return self.weight_distributions()["bias"].loc
        return self._deterministic_bias

    def set_kl_weight(self, value):
        """Sets the KL weight (use `tfbdl.set_kl_weight(model, ...)` for a whole model)."""
        self.kl_weight.assign(float(value))

    @property
    def kl_weight_is_set(self):
        """False until a KL weight is set (or loaded); then the full KL is used, with a warning."""
        with tf.init_scope():  # read the value eagerly, also while a step is traced
            return float(self.kl_weight.numpy()) >= 0.0

    @property
    def use_posterior_mean(self):
        """True while `tfbdl.posterior_mean` makes this layer use its posterior-mean weights."""
        with tf.init_scope():
            return int(self.forward_mode.numpy()) == POSTERIOR_MEAN

    # ------------------------------------------------------------------ forward pass

    def call(self, inputs, training=None):
        model = self._report_to_calling_model()
        if training and not self.kl_weight_is_set:
            _warn_unset_kl_weight(self, model)
        # `autocast=False` also stops Keras casting the inputs: under a mixed policy the linear
        # op must still run in the compute dtype (the variational math stays float32), and
        # integer inputs are promoted to it as `keras.layers.Dense` promotes them.
        inputs = tf.cast(inputs, self.compute_dtype)
        kernel_seed, kernel_kl_seed, kernel_draw_seed, bias_seed, bias_kl_seed, bias_draw_seed = self._next_seeds(6)
        mode = tf.convert_to_tensor(self.forward_mode)

        # Each branch reads mu and sigma once, shared by the estimator and the KL (see
        # `snapshot`). The reads stay inside the branches: TensorFlow cannot differentiate a
        # branch through a custom-gradient tensor (the softplus) captured from outside it.
        # The KL is of the variational variables; the estimator sees the weights they give
        # (the same object but for a non-centred prior, `PriorTerm.weights`).

        def kernel_mean():
            variables = self.kernel_posterior.snapshot()
            kernel = self.kernel_prior_term.weights(variables)
            outputs = self.linear(inputs, tf.cast(kernel.loc, inputs.dtype))
            return outputs, _weight_kl(variables, self.kernel_prior_term, None, kernel_kl_seed)

        def kernel_estimate_with(estimator):
            def branch():
                variables = self.kernel_posterior.snapshot()
                kernel = self.kernel_prior_term.weights(variables, kernel_draw_seed)
                outputs, sample = estimator(self, inputs, kernel, kernel_seed)
                return outputs, _weight_kl(variables, self.kernel_prior_term, sample, kernel_kl_seed)
            return branch

        # `estimator` is a plain function stored on the class: read from the class, it is unbound.
        branches = {ESTIMATOR: kernel_estimate_with(type(self).estimator), POSTERIOR_MEAN: kernel_mean,
                    ONE_SAMPLE_PER_BATCH: kernel_estimate_with(estimators.reparameterization)}
        outputs, kl = tf.switch_case(mode, [branches[key] for key in sorted(branches)])

        if self.bias_posterior is not None:  # sampled once per batch unless in POSTERIOR_MEAN mode
            bias, bias_kl = tf.cond(
                tf.equal(mode, POSTERIOR_MEAN),
                lambda: self._bias_and_kl(None, None, bias_kl_seed),
                lambda: self._bias_and_kl(bias_seed, bias_draw_seed, bias_kl_seed),
            )
            kl += bias_kl
            outputs = self.add_bias(outputs, tf.cast(bias, outputs.dtype))
        elif self.use_bias:
            outputs = self.add_bias(outputs, tf.cast(self._deterministic_bias, outputs.dtype))

        # The KL of one set of weights counts once per forward pass, however many times the
        # layer is called in it (weight sharing): only the first call adds it.
        if not _keras_internals.own_losses(self):
            weight = tf.where(self.kl_weight < 0.0, 1.0, self.kl_weight)  # unset: the full KL
            self.add_loss(weight * kl)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _bias_and_kl(self, sample_seed, draw_seed, kl_seed):
        """(bias, its KL): a draw from q(b), or its mean when `sample_seed` is None."""
        variables = self.bias_posterior.snapshot()
        bias = self.bias_prior_term.weights(variables, draw_seed)
        sample = None if sample_seed is None else bias.sample(sample_seed)
        kl = _weight_kl(variables, self.bias_prior_term, sample, kl_seed)
        return (bias.loc if sample is None else sample), kl

    def _report_to_calling_model(self):
        """Makes the model calling this layer report its ELBO terms (`tfbdl.elbo`); returns
        that model (None when the layer is called on its own)."""
        model = _keras_internals.calling_model()
        if isinstance(model, keras.Model) and elbo.elbo_terms_metric(model) is None:
            elbo.track_elbo(model, bayesian_layers(model))
        return model

    def variational_weights(self):
        """{"kernel": (posterior, prior term)}, plus "bias" when the bias is Bayesian."""
        weights = {"kernel": (self.kernel_posterior, self.kernel_prior_term)}
        if self.bias_posterior is not None:
            weights["bias"] = (self.bias_posterior, self.bias_prior_term)
        return weights

    def weight_distributions(self):
        """{"kernel": q(W)}, plus "bias" when the bias is Bayesian: mean-field Normals with
        the exact posterior mean and standard deviation of each weight (the variational
        variables themselves, but for a non-centred prior; see `PriorTerm.weights`)."""
        return {name: term.weights(posterior) for name, (posterior, term) in self.variational_weights().items()}

    def kl_divergence(self):
        """KL(q || p) of this layer's weights, unweighted.

        Closed-form terms draw no random numbers (so monitoring the KL leaves the training
        noise of a seeded run unchanged); Monte Carlo terms use a fresh weight sample.
        """
        terms = list(self.variational_weights().values())
        needs_seeds = any(prior_term.requires_sample for _, prior_term in terms)
        seeds = self._next_seeds(len(terms)) if needs_seeds else [None] * len(terms)
        return tf.add_n([
            _weight_kl(posterior, prior_term, None, seed)
            for (posterior, prior_term), seed in zip(terms, seeds)
        ])

    def _next_seeds(self, n):
        """n independent stateless seeds from one step of the layer's SeedGenerator."""
        # SeedGenerator state is int64; stateless TF ops want int32 (as keras.random does).
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        return tfp.random.split_seed(seed, n=n)

    # ------------------------------------------------------------------ saving

    def get_config(self):
        config = super().get_config()
        config.update(
            prior=keras.saving.serialize_keras_object(self.prior),
            bias_prior=(
                None if self.bias_prior is None
                else keras.saving.serialize_keras_object(self.bias_prior)
            ),
            posterior=keras.saving.serialize_keras_object(self.posterior),
            seed=self.seed,
        )
        return config

    def save_own_variables(self, store):
        # The Keras twins save only `kernel` and `bias`; a Bayesian layer saves all its state.
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        # A KL weight already set for the current data is kept; an unset one is loaded.
        stated = self.kl_weight.numpy() if self.kl_weight_is_set else None
        keras.layers.Layer.load_own_variables(self, store)
        if stated is not None:
            self.kl_weight.assign(stated)

    def enable_lora(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not support LoRA.")

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not support quantization.")


def bayesian_layers(model):
    """All tfbdl Bayesian layers of `model`, nested models included, in model order."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model or layer, got model={model!r}.")
    return [layer for layer in _keras_internals.flatten_layers(model) if isinstance(layer, BayesianLayer)]
