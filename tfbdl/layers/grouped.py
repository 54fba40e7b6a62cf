"""Grouped hierarchical Bayesian layers: one weight tensor per group, partially pooled.

When the data come in groups (car models by manufacturer, products by category, the
rotated two-moons of Wiecki 2018, "Hierarchical Bayesian Neural Networks with Informative
Priors"), a grouped layer holds one kernel per group, drawn around a learned population
kernel with a learned spread tau (one per layer, or per output unit):

    w_pop ~ p(w_pop)  (default N(0, 1)),   tau ~ HalfNormal(a),   w_g | w_pop, tau ~ N(w_pop, tau^2)

A small tau pools the groups (they share that layer), a large one lets them specialize:
the partial pooling of Gelman et al., "Bayesian Data Analysis" (3rd ed., ch. 5), and
Gelman & Hill (2007), learned per layer by the ELBO. Called as `layer([x, group])`, the
group an integer index per example in [0, num_groups).

With `prior=GroupedHierarchical(...)` (the default) the layer partially pools; any other
prior (e.g. `tfbdl.priors.Gaussian(1.0)`) gives each group independent weights under that
prior, i.e. separate networks per group (no pooling). `bias_prior=` works the same way
for the per-group biases (shape (num_groups, units)); `None` keeps them deterministic.

The estimator (Flipout, reparameterization, local reparameterization) is the one of the
plain layers (`tfbdl.layers.estimators`), applied to the per-group linear op

    y_n = x_n W_{g_n} = (onehot(g_n) (x) x_n) reshape(W, [G * in, out])

one matmul with G times the plain layer's FLOPs and no per-example kernels; everything
else (KL weight, `tfbdl.posterior_mean`, `tfbdl.predict`, saving, ELBO logging,
`PosteriorMonitor`, `tfbdl.learned_tau`) is `BayesianLayer`'s.
"""

import contextlib
import threading

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfbdl import _validation, posteriors, priors
from tfbdl.layers import estimators
from tfbdl.layers.base import BayesianLayer

__all__ = [
    "GroupedHierarchical",
    "GroupedHierarchicalKL",
    "NonCentredGroupedKL",
    "GroupedDenseFlipout",
    "GroupedDenseReparameterization",
    "GroupedDenseLocalReparameterization",
]

register = keras.saving.register_keras_serializable(package="tfbdl")


class _Offsets:
    """q(w_g) seen from the population mean: loc = mu_g - nu, the same scale sigma_g."""

    def __init__(self, posterior, population_loc):
        self.loc = tf.convert_to_tensor(posterior.loc) - population_loc
        self._scale = posterior.scale()

    def scale(self):
        return self._scale


class _GroupedTerm(priors.PriorTerm):
    """What both parameterizations of the grouped hierarchy share: q(w_pop) = N(nu, lambda^2)
    and q(tau) = LogNormal(m, s^2), their report, and the prior of an unseen group.

    Attributes:
        population: the `NormalWeights` of q(w_pop) (variables `<name>_population_*`).
        population_term: the prior term of w_pop.
        tau_term: the `HierarchicalKL` holding q(tau) (variables `<name>_tau_*`).
    """

    def __init__(self, population, population_term, tau_term):
        self.population = population
        self.population_term = population_term
        self.tau_term = tau_term

    def start(self, posterior):
        """Starts the population where the layer's initializer put group 0 (all groups start
        alike: the pooled network)."""
        self.population.loc.assign(posterior.loc[0])

    @property
    def tau(self):
        """E_q[tau], the learned spread of the groups around the population."""
        return self.tau_term.tau

    def summary(self):
        return self.tau_term.summary()

    def new_group_prior(self):
        """`Informed(nu, sqrt(lambda^2 + E[tau^2]))`: the population's prior for an unseen group.

        The moment-matched marginal of w_new = w_pop + tau * eps, eps ~ N(0, 1), under
        q(w_pop) q(tau): an informed prior for few-shot learning of a new group with an
        ordinary (ungrouped) Bayesian layer (Wiecki 2018).
        """
        scale = tf.sqrt(tf.square(self.population.scale()) + self.tau_term.tau_second_moment)
        return priors.Informed(self.population.loc.numpy(), scale.numpy())


class GroupedHierarchicalKL(_GroupedTerm):
    """KL of the centred grouped hierarchy, in closed form.

    Prior: w_pop ~ p(w_pop), tau ~ HalfNormal(a), w_gi | w_pop, tau ~ N(w_pop_i, tau^2).
    Posterior (mean field): q(w_gi) = N(mu_gi, sigma_gi^2), q(w_pop_i) = N(nu_i, lambda_i^2),
    q(tau) = LogNormal(m, s^2). Then

        KL(q || p) = sum_{g,i} E_q[log q(w_gi) - log N(w_gi | w_pop_i, tau^2)]
                     + KL(q(tau) || HalfNormal(a)) + KL(q(w_pop) || p(w_pop)),

    and, as E_q[(w_gi - w_pop_i)^2] = sigma_gi^2 + lambda_i^2 + (mu_gi - nu_i)^2,

        E_q[log q(w_gi) - log N(w_gi | w_pop_i, tau^2)]
            = E[log tau] - log sigma_gi + (sigma_gi^2 + (mu_gi - nu_i)^2) / 2 E[tau^-2] - 1/2
              + lambda_i^2 / 2 E[tau^-2],      E[log tau] = m,  E[tau^-2] = exp(-2m + 2s^2).

    The first line is `tfbdl.priors.HierarchicalKL` (which also gives KL(q(tau) || HalfNormal))
    at the offsets mu_gi - nu_i; the population's own variance adds G/2 sum_i lambda_i^2 E[tau^-2].
    Exact: no Monte Carlo, no random numbers.
    """

    def kl(self, posterior, sample):
        population = self.population.snapshot()
        num_groups = float(posterior.shape[0])
        m, s = self.tau_term._tau_posterior()
        inverse_variance = tf.exp(-2.0 * m + 2.0 * tf.square(s))  # E[tau^-2]
        groups = self.tau_term.kl(_Offsets(posterior, population.loc), None)
        population_variance = 0.5 * num_groups * tf.reduce_sum(
            tf.square(population.scale()) * inverse_variance
        )
        return groups + population_variance + self.population_term.kl(population, None)


_STANDARD_NORMAL = priors.NormalKL(None, 1.0)  # KL(q(eps) || N(0, I))


class NonCentredGroupedKL(_GroupedTerm):
    """The non-centred grouped hierarchy: w_g = w_pop + tau * eps_g, eps_g ~ N(0, I).

    The layer's kernel variables are q(eps_gi) = N(mu_gi, sigma_gi^2) (mean field), beside
    q(w_pop) and q(tau) as in the centred form. Under the prior, eps, w_pop and tau are
    independent, and (eps, w_pop, tau) -> (w, w_pop, tau) is one-to-one, so

        KL(q || p) = sum_{g,i} KL(N(mu_gi, sigma_gi^2) || N(0, 1))
                     + KL(q(w_pop) || p(w_pop)) + KL(q(tau) || HalfNormal(a)),

    all in closed form. The weights the estimator sees: per forward pass one draw of w_pop
    and tau, shared by the batch (reparameterized), and given them

        w_gi ~ N(w_pop_i + tau mu_gi, (tau sigma_gi)^2),

    to which Flipout or local reparameterization apply unchanged. The posterior couples
    the groups through tau and w_pop, where the centred mean field cannot: in hierarchies
    with few data per group this is the parameterization that samples and fits better
    (Papaspiliopoulos, Roberts & Skold 2007; Betancourt & Girolami 2015). Wiecki 2018 fits
    his hierarchical networks non-centred.
    """

    centred = False

    def start(self, posterior):
        """Every group starts at the population (eps means 0), itself at group 0's start."""
        super().start(posterior)
        posterior.loc.assign(tf.zeros_like(posterior.loc))

    def kl(self, posterior, sample):
        standard = _STANDARD_NORMAL.kl(posterior, None)
        return standard + self.population_term.kl(self.population.snapshot(), None) + self.tau_term.tau_kl()

    def weights(self, posterior, seed=None):
        """q(w | w_pop, tau) for one draw of (w_pop, tau) at `seed`; with `seed=None` the
        mean-field Normal with q(w)'s exact moments,

            E[w_gi] = nu_i + E[tau] mu_gi,
            Var[w_gi] = lambda_i^2 + E[tau^2] (mu_gi^2 + sigma_gi^2) - E[tau]^2 mu_gi^2.
        """
        population = self.population.snapshot()
        mu, sigma = tf.convert_to_tensor(posterior.loc), posterior.scale()
        if seed is None:
            tau, tau_squared = self.tau_term.tau, self.tau_term.tau_second_moment
            variance = (tf.square(population.scale()) + tau_squared * (tf.square(mu) + tf.square(sigma))
                        - tf.square(tau * mu))
            return posteriors.NormalTensors(population.loc + tau * mu, tf.sqrt(variance))
        tau_seed, population_seed = tfp.random.split_seed(seed, n=2)
        tau = self.tau_term.sample_tau(tau_seed)
        return posteriors.NormalTensors(population.sample(population_seed) + tau * mu, tau * sigma)


PARAMETERIZATIONS = {"centred": GroupedHierarchicalKL, "non_centred": NonCentredGroupedKL}


@register
class GroupedHierarchical(priors.Prior):
    """Prior of a grouped layer's weights: w_g ~ N(w_pop, tau^2) around a learned population.

    Args:
        spread: the hyperprior of tau, a `tfbdl.priors.HalfNormalHierarchical` (its
            `scale` a, and `per_unit=True` for one tau per output unit). Default scale 1.
        population: the prior of w_pop, any closed-form prior (`Gaussian`, `Informed`, a
            Normal `tfd` distribution). Default `Gaussian(1.0)`.
        parameterization: "centred" (default: the layer's variables are the group weights'
            q(w_g); `GroupedHierarchicalKL`) or "non_centred" (w_g = w_pop + tau * eps_g,
            the variables are q(eps_g); `NonCentredGroupedKL`). The same model and prior;
            the mean-field posterior, and so the fit, differ.

    Only for grouped layers: the weight's first axis is the group.

    Example:
        >>> prior = tfbdl.layers.GroupedHierarchical(spread=tfbdl.priors.HalfNormalHierarchical(1.0))
        >>> layer = tfbdl.layers.GroupedDenseFlipout(16, num_groups=18, prior=prior)
    """

    def __init__(self, spread=None, population=None, parameterization="centred"):
        spread = priors.get(spread, "spread") or priors.HalfNormalHierarchical(1.0)
        if not isinstance(spread, priors.HalfNormalHierarchical):
            raise ValueError(
                "GroupedHierarchical: `spread` must be a tfbdl.priors.HalfNormalHierarchical, "
                f"got spread={spread!r}."
            )
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"GroupedHierarchical: `parameterization` must be one of {sorted(PARAMETERIZATIONS)}, "
                f"got parameterization={parameterization!r}."
            )
        self.spread = spread
        self.population = priors.get(population, "population") or priors.Gaussian(1.0)
        self.parameterization = parameterization

    def check_shape(self, shape, argument):
        if len(shape) < 2:
            raise ValueError(
                f"`{argument}`: GroupedHierarchical needs a weight with a leading group axis, "
                f"got shape {tuple(shape)}."
            )
        self.population.check_shape(shape[1:], argument)

    def bind(self, layer, name, shape):
        self.check_shape(shape, name)
        population_name = f"{name}_population"
        population_term = self.population.bind(layer, population_name, shape[1:])
        if population_term.requires_sample:
            raise ValueError(
                f"GroupedHierarchical: `population` needs a closed-form KL (Gaussian, Informed, "
                f"a Normal distribution), got population={self.population!r}."
            )
        # Its mean is set to the groups' common starting value by the layer's `build`.
        population = layer.posterior.bind(layer, population_name, shape[1:], "zeros")
        tau_term = self.spread.bind(layer, name, shape[1:])  # fans and tau shape of one group
        return PARAMETERIZATIONS[self.parameterization](population, population_term, tau_term)

    def get_config(self):
        return {
            "spread": keras.saving.serialize_keras_object(self.spread),
            "population": keras.saving.serialize_keras_object(self.population),
            "parameterization": self.parameterization,
        }

    def __repr__(self):
        return (f"GroupedHierarchical(spread={self.spread!r}, population={self.population!r}, "
                f"parameterization={self.parameterization!r})")


class _TiledInitializer(keras.initializers.Initializer):
    """One draw of `initializer` for a single group's shape, repeated for every group: each
    group starts at the same weights (the pooled network), with the fans of one group."""

    def __init__(self, initializer):
        self.initializer = keras.initializers.get(initializer)

    def __call__(self, shape, dtype=None):
        one = self.initializer(shape[1:], dtype=dtype)
        return tf.tile(one[tf.newaxis], [shape[0]] + [1] * (len(shape) - 1))

    def get_config(self):
        return {"initializer": keras.saving.serialize_keras_object(self.initializer)}


class GroupedBayesianDense(BayesianLayer, keras.layers.Dense):
    """`keras.layers.Dense` with one Bayesian kernel (and bias) per group; see the module docstring.

    Args:
        units: output units, as `keras.layers.Dense`.
        num_groups: G, the number of groups; group indices lie in [0, G).
        prior: `GroupedHierarchical()` (default: partial pooling) or any prior (independent
            groups). Other arguments as `tfbdl.layers.DenseFlipout`.

    Call: `layer([x, group])` with x of shape (batch, in) and group integer indices of
    shape (batch,) or (batch, 1). An index outside [0, G) raises a `ValueError` when called
    eagerly (an `InvalidArgumentError` with the same message inside a traced `fit`/`predict`).
    """

    def __init__(self, units, num_groups, prior=None, **kwargs):
        self.num_groups = _validation.integer(num_groups, "num_groups", type(self).__name__, 1)
        prior = priors.get(prior, "prior") or GroupedHierarchical()
        super().__init__(units, prior=prior, **kwargs)
        self._group_scope = threading.local()  # per thread: tf.distribute traces replicas in threads
        self.input_spec = [keras.layers.InputSpec(ndim=2), keras.layers.InputSpec(min_ndim=1, max_ndim=2)]

    def weight_shapes(self, input_shape):
        x_shape, group_shape = input_shape
        input_dim = x_shape[-1]
        self.input_spec = [
            keras.layers.InputSpec(ndim=2, axes={-1: input_dim}),
            keras.layers.InputSpec(min_ndim=1, max_ndim=2),
        ]
        return (self.num_groups, input_dim, self.units), (self.num_groups, self.units)

    def build(self, input_shape):
        # The twin's initializers, drawn once per group shape (the config keeps the user's).
        user = self.kernel_initializer, self.bias_initializer
        self.kernel_initializer, self.bias_initializer = map(_TiledInitializer, user)
        try:
            super().build(input_shape)
        finally:
            self.kernel_initializer, self.bias_initializer = user
        for posterior, term in self.variational_weights().values():
            if isinstance(term, _GroupedTerm):
                term.start(posterior)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.units,)

    # ---------------------------------------------------------------- the per-group op

    def call(self, inputs, training=None):
        x, groups = inputs
        with self._groups(self._checked_groups(groups)):
            return super().call(x, training=training)

    @contextlib.contextmanager
    def _groups(self, groups):
        """Within the block, `linear` and `add_bias` route each example to its group."""
        self._group_scope.one_hot = tf.one_hot(groups, self.num_groups, dtype=self.compute_dtype)
        try:
            yield
        finally:
            del self._group_scope.one_hot

    def linear(self, inputs, kernel):
        one_hot = self._group_scope.one_hot
        routed = one_hot[:, :, tf.newaxis] * inputs[:, tf.newaxis, :]  # (batch, G, in)
        flat = tf.reshape(routed, [-1, self.num_groups * inputs.shape[-1]])
        return tf.matmul(flat, tf.reshape(kernel, [-1, self.units]))

    def add_bias(self, outputs, bias):
        return outputs + tf.matmul(self._group_scope.one_hot, bias)

    def _checked_groups(self, groups):
        """The group indices as int32 of shape (batch,), after checking they lie in [0, G)."""
        groups = tf.convert_to_tensor(groups)
        if not groups.dtype.is_integer:
            raise ValueError(
                f"{self.name}: `group` must hold integer indices (e.g. keras.Input((), dtype='int32')), "
                f"got dtype {groups.dtype.name}."
            )
        groups = tf.reshape(tf.cast(groups, tf.int32), tf.shape(groups)[:1])
        message = f"{self.name}: `group` indices must lie in [0, num_groups={self.num_groups})"
        if tf.executing_eagerly():
            values = groups.numpy()
            bad = values[(values < 0) | (values >= self.num_groups)]
            if bad.size:
                raise ValueError(f"{message}, got group={bad[:5].tolist()} (first bad values).")
            return groups
        checks = [
            tf.debugging.assert_non_negative(groups, message=message),
            tf.debugging.assert_less(groups, self.num_groups, message=message),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(groups)

    def get_config(self):
        config = super().get_config()
        config["num_groups"] = self.num_groups
        return config


@register
class GroupedDenseFlipout(GroupedBayesianDense):
    """Grouped hierarchical dense layer with Flipout (Wen et al. 2018) on each group's kernel.

        y_n = activation(x_n mu_{g_n} + ((x_n * s_n) Delta W_{g_n}) * r_n + b_{g_n}),
        W_g ~ N(W_pop, tau^2)  (see `GroupedHierarchicalKL`)

    Wiecki 2018, "Hierarchical Bayesian Neural Networks with Informative Priors".

    Example:
        >>> x, group = keras.Input((2,)), keras.Input((), dtype="int32")
        >>> h = tfbdl.layers.GroupedDenseFlipout(16, num_groups=18, activation="tanh")([x, group])
        >>> y = tfbdl.layers.GroupedDenseFlipout(1, num_groups=18, activation="sigmoid")([h, group])
        >>> model = keras.Model([x, group], y)
    """

    estimator = estimators.flipout


@register
class GroupedDenseReparameterization(GroupedBayesianDense):
    """Grouped hierarchical dense layer sampling each group's kernel once per batch.

        W_g = mu_g + sigma_g * eps_g,   y_n = activation(x_n W_{g_n} + b_{g_n})

    Blundell et al. 2015; the hierarchy as in `GroupedDenseFlipout`.
    """

    estimator = estimators.reparameterization


@register
class GroupedDenseLocalReparameterization(GroupedBayesianDense):
    """Grouped hierarchical dense layer sampling pre-activations (Kingma et al. 2015).

        x_n W_{g_n} ~ N(x_n mu_{g_n}, x_n^2 sigma_{g_n}^2)
    """

    estimator = estimators.local_reparameterization

