#define KNS generic
#include "kernels_impl.h"
