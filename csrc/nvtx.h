// Scoped NVTX3 range in the `dynadiff` domain for C++ launchers; a no-op without the NVTX headers.
#pragma once

#if defined(DYNADIFF_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
namespace dynadiff {
struct NvtxDomain {
  static constexpr const char* name = "dynadiff";
};
class NvtxRange {
 public:
  explicit NvtxRange(const char* message) {
    static nvtxDomainHandle_t domain = nvtxDomainCreateA(NvtxDomain::name);
    domain_ = domain;
    nvtxEventAttributes_t attr = {};
    attr.version = NVTX_VERSION;
    attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
    attr.message.ascii = message;
    nvtxDomainRangePushEx(domain_, &attr);
  }
  ~NvtxRange() { nvtxDomainRangePop(domain_); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  nvtxDomainHandle_t domain_;
};
}  // namespace dynadiff
#define DYNADIFF_NVTX_RANGE(msg) ::dynadiff::NvtxRange dynadiff_nvtx_range_(msg)
#else
#define DYNADIFF_NVTX_RANGE(msg) ((void)0)
#endif
