// Links the one-translation-unit-per-header check; running it proves the TUs linked together
// (no ODR clash between headers included in several TUs).
#include "tpx/version.hpp"
int main() {
  return tpx::version[0] == '\0';
}
