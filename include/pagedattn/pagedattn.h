// Umbrella header of the pagedattn C++ API.
#pragma once

#include "pagedattn/attention.h"
#include "pagedattn/batch_builder.h"
#include "pagedattn/block_manager.h"
#include "pagedattn/dtype.h"
#include "pagedattn/error.h"
#include "pagedattn/info.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/paged_kv.h"
#include "pagedattn/plan.h"
#include "pagedattn/tensor.h"
#include "pagedattn/workspace.h"
