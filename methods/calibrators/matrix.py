"""Matrix scaling (Guo et al., 2017): calibrated logits W z + b with a full K×K matrix,
fitted by NLL on ID validation data — multinomial logistic regression on the logits,
without a penalty. K(K+1) parameters: it overfits a small val set or many classes (Guo et
al.: poor with hundreds of classes, no convergence on ImageNet), and on a separable val set the
NLL has no minimum (the fit stops with large weights). `converged`: L-BFGS's success flag."""

from methods.calibrators.vector import VectorScaling


class MatrixScaling(VectorScaling):
    diagonal = False  # the full K×K weight matrix: the fit, the transform and params follow
