// The fastgan operator library: every schema in one place. Kernels register themselves per
// device in csrc/cpu/*.cpp and csrc/cuda/*.cu, autograd in csrc/autograd/*.cpp, and the
// fake (meta) kernels in Python (fastgan/ops/*.py).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fastgan, m) {
  // bias_leaky_relu family: csrc/bias_leaky_relu.h
  // bias: x's dtype, or float32 for half x; the backward returns the bias gradient in
  // bias_dtype (the bias's), or an empty one for None.
  m.def("bias_leaky_relu(Tensor x, Tensor? bias, float negative_slope, float scale) -> Tensor");
  m.def(
      "bias_leaky_relu_backward(Tensor grad, Tensor y, float negative_slope, float scale, "
      "ScalarType? bias_dtype) -> (Tensor, Tensor)");

  // batch_norm family: csrc/batch_norm.h
  // Returns (y, save_mean, save_invstd); the statistics are float32 (float64 for float64 x).
  // Training updates running_mean / running_var in place (declared mutable: opcheck and
  // torch.compile functionalize it); eval reads them. negative_slope: a fused LeakyReLU.
  // num_batches_tracked (int64, one element): training adds 1 to it inside the kernel, the
  // counter torch.nn's batch norm keeps, without a launch of its own.
  m.def(
      "batch_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, bool training, float momentum, float eps, float? negative_slope, "
      "Tensor(c!)? num_batches_tracked=None) -> (Tensor, Tensor, Tensor)");
  // (grad_x, grad_weight, grad_bias); an output whose output_mask entry is False is empty (0,).
  m.def(
      "batch_norm_backward(Tensor grad, Tensor x, Tensor? weight, Tensor? bias, Tensor save_mean, "
      "Tensor save_invstd, bool training, float? negative_slope, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");

  // losses family: csrc/losses.h. A null target means the constant label target_value;
  // reduction is 'none', 'mean' or 'sum'. The GAN losses return float32 for half types; kind
  // indexes fastgan.ops.LOSS_KINDS (0 'bce', 1 'hinge', 2 'lsgan', 3 'wgan'), and its default
  // keeps the callers from before the kinds working.
  m.def(
      "bce_with_logits(Tensor logits, Tensor? target, float target_value, Tensor? weight, "
      "Tensor? pos_weight, str reduction) -> Tensor");
  m.def(
      "bce_with_logits_backward(Tensor grad, Tensor logits, Tensor? target, float target_value, "
      "Tensor? weight, Tensor? pos_weight, str reduction) -> Tensor");
  m.def("gan_d_loss(Tensor real_logits, Tensor fake_logits, float real_label, float fake_label, int kind=0) -> Tensor");
  m.def(
      "gan_d_loss_backward(Tensor grad, Tensor real_logits, Tensor fake_logits, float real_label, "
      "float fake_label, int kind=0) -> (Tensor, Tensor)");
  m.def("gan_g_loss(Tensor fake_logits, float real_label, int kind=0) -> Tensor");
  m.def("gan_g_loss_backward(Tensor grad, Tensor fake_logits, float real_label, int kind=0) -> Tensor");

  // adam_ family: csrc/adam.h. One Adam step (no amsgrad) for a list of parameters, in place;
  // step is the step count including this one (a device tensor on CUDA, so graphs can run it).
  m.def(
      "adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor step, float lr, float beta1, float beta2, float eps, float weight_decay) -> ()");
}

// `import fastgan._C` loads this library, which runs the registrations above. The module
// itself only says what was compiled.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "fastgan's compiled kernels", -1, nullptr};
  PyObject* m = PyModule_Create(&def);
  if (m == nullptr) return nullptr;
#ifdef FASTGAN_WITH_CUDA
  PyModule_AddObject(m, "with_cuda", Py_NewRef(Py_True));
  PyModule_AddStringConstant(m, "cuda_arch_list", FASTGAN_CUDA_ARCH_LIST);
#else
  PyModule_AddObject(m, "with_cuda", Py_NewRef(Py_False));
  PyModule_AddStringConstant(m, "cuda_arch_list", "");
#endif
#ifdef _OPENMP
  PyModule_AddObject(m, "openmp", Py_NewRef(Py_True));
#else
  PyModule_AddObject(m, "openmp", Py_NewRef(Py_False));
#endif
  return m;
}
